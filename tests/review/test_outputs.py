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
    # the data behind it, for `dvc plots show` (dvc.yaml's plots): flow run 102's 7/10
    assert (project / "runs" / "figures" / "success.csv").read_text() == \
        "name,success_rate\nreacher.easy,70.0\n"
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


def test_learning_curves_show_return_against_updates_and_the_q_losss_expected_shape(tmp_path):
    """The training run's eval/* points (from its MLflow run) join the logged losses by update
    and are drawn, in percent, as the figure's first panel; the Q note sits under it."""
    from pac.pipeline import with_eval_curves
    from pac.plots import Q_NOTE, learning_curves
    from pac.tracking import Tracker

    cfg = load_config(overrides=[f"tracking.uri=sqlite:///{tmp_path}/mlflow.db",
                                 f"tracking.artifact_dir={tmp_path}/artifacts"])
    run = Tracker(cfg, "pretrain-tiny")
    for step, ret, success in ((50, 0.25, 0.0), (100, 0.625, 0.5)):
        run.log_metrics({"eval/return_norm": ret, "eval/success": success}, step=step)
    losses = [{"step": s, "loss/total": 9.0 - s / 50, "loss/policy_improvement": 1.0,
               "loss/bc": 2.0, "loss/q": 3.0 - s / 100, "alpha": 0.75, "beta": 38.0}
              for s in (25, 50, 75, 100)]
    history = with_eval_curves(cfg, losses, run.run_id)
    assert [h["step"] for h in history] == [25, 50, 75, 100]
    assert [h.get("eval/return_norm") for h in history] == [None, 0.25, None, 0.625]
    assert history[3]["loss/q"] == 2.0  # the losses are kept
    fig = learning_curves(history)
    first = fig.axes[0]
    lines = {line.get_label(): line for line in first.lines}
    assert list(lines["% of expert"].get_xdata()) == [50, 100]
    assert list(lines["% of expert"].get_ydata()) == [25.0, 62.5]
    assert list(lines["success %"].get_ydata()) == [0.0, 50.0]
    assert [t.get_text() for t in fig.texts if t.get_text() == Q_NOTE] == [Q_NOTE]
    assert with_eval_curves(cfg, losses, None) == losses  # no training run: losses only
