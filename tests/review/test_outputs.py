"""`pac figures` and `pac eval` find a flow run's outputs under runs/flow/<id>/ when not told,
and say where they looked instead of exiting 0 having drawn nothing."""

import os
from pathlib import Path

import pytest

from pac.cli import main
from pac.config import load_config
from pac.evaluation.commands import default_checkpoint
from pac.review.outputs import champion_policy, output_dirs

HEADER = "section,level,name,horizon,successes,episodes,success_rate,success_low,success_high\n"


def _results(folder: Path, task: str, successes: int, mtime: float) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "results.csv"
    path.write_text(HEADER + f"train,task,{task},100,{successes},10,{10 * successes},5.0,95.0\n")
    os.utime(path, (mtime, mtime))


@pytest.fixture
def project(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    return tmp_path


def test_figures_with_nothing_to_draw_say_where_they_looked_and_fail(project, capsys):
    assert main(["figures"]) == 1
    err = capsys.readouterr().err
    assert "nothing to draw: looked in runs/pretrain, runs/eval and runs/rlft" in err
    assert "runs/flow/<id>/pretrain" in err
    assert not list((project / "runs").rglob("*.png"))


def test_figures_default_to_the_newest_flow_run(project, capsys):
    _results(project / "runs" / "flow" / "101" / "eval", "cartpole.balance", 3, 1_000_000)
    _results(project / "runs" / "flow" / "102" / "eval", "reacher.easy", 7, 2_000_000)
    _results(project / "runs" / "eval", "point_mass.easy", 5, 500_000)  # older, stand-alone
    dirs = output_dirs(load_config())
    assert (dirs.eval, dirs.origin) == (Path("runs/flow/102/eval"), "flow run 102")
    assert main(["figures"]) == 0
    assert "from flow run 102" in capsys.readouterr().out
    assert (project / "runs" / "figures" / "success.png").read_bytes()[:4] == b"\x89PNG"
    # a newer stand-alone evaluation wins over the flow run; explicit folders always win
    os.utime(project / "runs" / "eval" / "results.csv", (3_000_000, 3_000_000))
    assert output_dirs(load_config()).origin == "params"
    given = output_dirs(load_config(), eval_dir="runs/flow/101/eval")
    assert (given.eval, given.origin) == (Path("runs/flow/101/eval"), "given")


def test_eval_without_checkpoint_takes_the_flow_runs_policy_or_says_what_to_pass(project,
                                                                                   capsys):
    assert main(["eval", "--no-track"]) == 2
    err = capsys.readouterr().err
    assert "looked in runs/pretrain/policy and for a flow run under runs/flow/" in err
    assert "--checkpoint" in err
    policy = project / "runs" / "flow" / "7" / "pretrain" / "policy"
    policy.mkdir(parents=True)
    assert champion_policy(Path("runs/flow/7")) == Path("runs/flow/7/pretrain/policy")
    assert default_checkpoint(load_config()) == "runs/flow/7/pretrain/policy"
    (project / "runs" / "pretrain" / "policy").mkdir(parents=True)  # a stand-alone training
    assert default_checkpoint(load_config()) == "runs/pretrain/policy"
