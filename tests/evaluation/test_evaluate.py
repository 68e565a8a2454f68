"""pac.evaluation: the harness itself (expert ~100%, random ~0%), tables, DVC metrics, bad input."""

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from eval_helpers import tiny_checkpoint
from flow_helpers import ROOT, flow_env

from pac.config import load_config
from pac.evaluation.evaluator import Runner, evaluate, reference_returns

VENV_BIN = Path(sys.executable).parent


def _cfg(tmp_path: Path, *extra: str):
    return load_config(
        overrides=[
            "eval.episodes_per_task=6",
            "eval.workers=1",
            "eval.videos_per_task=0",
            f"eval.out_dir={tmp_path / 'eval'}",
            *extra,
        ]
    )


def _rows(path: Path) -> dict[tuple[str, str], dict[str, str]]:
    with open(path) as fh:
        return {(r["level"], r["name"]): r for r in csv.DictReader(fh)}


def test_expert_scores_100_and_random_0_through_the_same_harness(tmp_path):
    cfg = _cfg(tmp_path)
    expert = evaluate(cfg, policy="expert", track=False)
    rows = _rows(expert.out_dir / "results.csv")
    for task in ("point_mass.easy", "cartpole.balance", "reacher.easy"):
        row = rows[("task", task)]
        print("expert", task, row["pct_expert"], row["pct_expert_low"], row["pct_expert_high"])
        assert 85.0 <= float(row["pct_expert"]) <= 115.0
        assert float(row["success_rate"]) >= 80.0
    assert abs(float(rows[("all", "all")]["pct_expert"]) - 100.0) < 5.0

    refs = json.loads((expert.out_dir / "references.json").read_text())
    random = evaluate(cfg, policy="random", track=False)
    assert json.loads((random.out_dir / "references.json").read_text()) == refs  # reused
    rows = _rows(random.out_dir / "results.csv")
    for task in ("point_mass.easy", "cartpole.balance", "reacher.easy"):
        row = rows[("task", task)]
        print("random", task, row["pct_expert"], row["pct_expert_low"], row["pct_expert_high"])
        assert abs(float(row["pct_expert"])) <= 15.0
        assert float(row["success_rate"]) == 0.0
    all_row = rows[("all", "all")]
    assert float(all_row["pct_expert_low"]) <= 0.0 <= float(all_row["pct_expert_high"]) + 1.0
    table = random.table
    assert "| **All** | 3 | 18 |" in table and "% of expert [95% CI]" in table


def test_references_from_params_and_held_out_section(tmp_path):
    cfg = _cfg(
        tmp_path,
        "eval.episodes_per_task=3",
        "eval.held_out_tasks=[cartpole.swingup]",
        "eval.expert_returns={cartpole.swingup: 40.0}",
    )
    with Runner(1) as run:
        refs = reference_returns(
            ["cartpole.swingup", "pendulum.swingup"], 3, 100, 0, run, tmp_path / "r.json",
            cfg.eval.expert_returns,
        )
    assert refs["cartpole.swingup"]["expert"] == 40.0
    assert refs["cartpole.swingup"]["expert_source"] == "params"
    assert refs["pendulum.swingup"]["expert"] is None  # no scripted expert, none given
    (tmp_path / "r.json").write_text("{not json")  # a damaged cache is rebuilt, not trusted
    with Runner(1) as run:
        again = reference_returns(["cartpole.swingup", "pendulum.swingup"], 3, 100, 0, run,
                                  tmp_path / "r.json", cfg.eval.expert_returns)
    assert again == refs and json.loads((tmp_path / "r.json").read_text())
    result = evaluate(
        cfg, tasks=["cartpole.swingup", "pendulum.swingup"], policy="random", track=False
    )
    sections = {(r["section"], r["name"]) for r in result.rows}
    assert ("held_out", "cartpole.swingup") in sections
    assert ("train", "pendulum.swingup") in sections
    assert "### Held-out tasks: per task" in result.table
    assert "| pendulum.swingup | 1 | 3 |" in result.table and "| N/A |" in result.table
    metrics = json.loads((result.out_dir / "metrics.json").read_text())
    assert metrics["train"]["tasks"]["pendulum.swingup"]["pct_expert"] is None  # JSON: no NaN
    assert metrics["held_out"]["all"]["episodes"] == 3


def test_dvc_metrics_show_reads_the_metrics_file(tmp_path):
    cfg = _cfg(tmp_path, "eval.episodes_per_task=2", f"eval.out_dir={tmp_path / 'repo/ev'}")
    evaluate(cfg, tasks=["point_mass.easy"], policy="expert", track=False)
    repo = tmp_path / "repo"
    (repo / "dvc.yaml").write_text("metrics:\n  - ev/metrics.json\n")
    dvc = str(VENV_BIN / "dvc")
    subprocess.run([dvc, "init", "--no-scm", "-q"], cwd=repo, check=True)
    out = subprocess.run(
        [dvc, "metrics", "show", "--json"], cwd=repo, check=True, capture_output=True, text=True
    )
    shown = json.loads(out.stdout)[""]["data"]["ev/metrics.json"]["data"]
    assert shown["train"]["tasks"]["point_mass.easy"]["success_rate"] == 100.0
    assert shown["timing"]["episodes_per_s"] > 0


def test_bad_input_fails_before_any_episode(tmp_path):
    cfg = _cfg(tmp_path)
    out = tmp_path / "eval"
    with pytest.raises(ValueError, match="unknown task 'humanoid.fly'"):
        evaluate(cfg, tasks=["humanoid.fly"], policy="random", track=False)
    with pytest.raises(ValueError, match="no scripted expert"):
        evaluate(cfg, tasks=["finger.spin"], policy="expert", track=False)
    with pytest.raises(ValueError, match="policy 'human' is not one of"):
        evaluate(cfg, policy="human", track=False)
    with pytest.raises(FileNotFoundError, match="not an inference checkpoint"):
        evaluate(cfg, tmp_path, track=False)
    with pytest.raises(ValueError, match="needs checkpoint_dir"):
        evaluate(cfg, track=False)
    assert not out.exists() or not any(out.iterdir())
    shutil.rmtree(out, ignore_errors=True)


def _tracking(root: Path) -> list[str]:
    return [
        f"tracking.uri=sqlite:///{root / 'mlruns' / 'mlflow.db'}",
        f"tracking.artifact_dir={root / 'mlruns' / 'artifacts'}",
    ]


def test_checkpoint_eval_same_seed_same_table(tmp_path):
    ckpt = tiny_checkpoint(tmp_path)
    cfg = _cfg(tmp_path, "eval.episodes_per_task=2", "eval.decode=q_rerank",
               "eval.num_candidates=4")
    first = evaluate(cfg, ckpt, out_dir=tmp_path / "a", track=False)
    second = evaluate(cfg, ckpt, out_dir=tmp_path / "b", track=False)
    table = (first.out_dir / "results.csv").read_text()
    print(first.table)
    print("inference Hz", first.inference_hz, "episodes/s", first.episodes_per_s)
    assert table == (second.out_dir / "results.csv").read_text()
    assert first.table == second.table
    assert len(table.splitlines()) == 1 + 3 + 3 + 1  # header, 3 tasks, 3 domains, all
    assert first.inference_hz > 0 and first.metrics["timing"]["inference_hz"] > 0
    cfg.eval.seed += 1
    other = evaluate(cfg, ckpt, ["cartpole.balance"], out_dir=tmp_path / "c", track=False)
    assert other.rows[0]["name"] == first.rows[0]["name"] == "cartpole.balance"
    assert other.rows[0]["mean_return"] != first.rows[0]["mean_return"]  # the seed matters


def test_checkpoint_too_small_for_a_task_fails_before_running(tmp_path):
    ckpt = tiny_checkpoint(tmp_path)
    cfg = _cfg(tmp_path)
    with pytest.raises(ValueError, match="walker.stand needs num_proprio>=24"):
        evaluate(cfg, ckpt, tasks=["walker.stand"], track=False)
    (ckpt / "tokenizer.model").unlink()
    with pytest.raises(FileNotFoundError, match="has no tokenizer.model"):
        evaluate(cfg, ckpt, track=False)
    assert not (tmp_path / "eval").exists()
    pac = str(VENV_BIN / "pac")
    bad = subprocess.run([pac, "eval", "--checkpoint", str(tmp_path / "nope"), "--no-track"],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "no checkpoint: looked in" in bad.stderr


@pytest.mark.slow
def test_pac_train_then_pac_eval_on_every_default_task(tmp_path, monkeypatch):
    """Default data -> `pac train` (a few updates) -> `pac eval` twice: same seed, same table."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    env = flow_env(ROOT) | {"MUJOCO_GL": "egl"}  # a user's shell: no in-process run's port
    pac = str(VENV_BIN / "pac")
    data = tmp_path / "data"
    common = ["--set", f"train.out_dir={tmp_path / 'pretrain'}"]
    for kv in _tracking(tmp_path):
        common += ["--set", kv]

    def run(*args: str) -> str:
        out = subprocess.run([pac, *args], cwd=tmp_path, env=env, capture_output=True, text=True)
        assert out.returncode == 0, out.stderr[-3000:]
        return out.stdout

    run("data", "generate", "--root", str(data), "--quiet", "--workers", "2")
    run("tokenizer", "train", "--root", str(data))
    run("train", "--data-root", str(data), *common, "--set", "train.steps=2",
        "--set", "train.log_every=1", "--set", "train.checkpoint_every=2")
    policy = tmp_path / "pretrain" / "policy"
    out = tmp_path / "eval"
    first = run("eval", *common, "--set", "eval.episodes_per_task=2", "--set", "eval.workers=2",
                "--set", "eval.videos_per_task=1", "--out", str(out))
    print(first)
    tasks = {"point_mass.easy", "cartpole.balance", "reacher.easy"}  # params/default.yaml
    assert {r["name"] for r in _rows(out / "results.csv").values()} >= tasks
    table, csv_text = (out / "results.md").read_text(), (out / "results.csv").read_text()
    assert table.splitlines()[0] in first
    assert len(list((out / "videos").glob("*.gif"))) == 3
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["train"]["tasks"]) == tasks and metrics["timing"]["inference_hz"] > 0

    from pac.tracking import get_run, list_artifacts

    cfg = load_config(overrides=[*_tracking(tmp_path), "eval.episodes_per_task=2",
                                 "eval.workers=1", "eval.videos_per_task=0"])
    run_id = first.split("MLflow run: ")[1].split()[0]
    logged = get_run(cfg, run_id)
    assert logged["status"] == "FINISHED" and logged["params"]["eval.decode"] == "argmax"
    assert logged["metrics"]["episodes"] == 6  # the "all" row under plain keys
    assert logged["metrics"]["timing/inference_hz"] > 0
    assert logged["params"]["eval.checkpoint"] == "pretrain/policy"  # relative to the project
    from pac.tracking import client

    tasks_runs = client(cfg).search_runs(
        [logged["experiment_id"]], f"tags.mlflow.parentRunId = '{run_id}'")
    assert {r.info.run_name for r in tasks_runs} == {f"eval-{t}" for t in tasks}
    assert all("success_rate" in r.data.metrics for r in tasks_runs)
    shown = [logged["metrics"], *(r.data.metrics for r in tasks_runs)]  # 4 decimals at most
    assert all(round(v, 4) == v for m in shown for v in m.values())
    assert logged["metrics"]["success_low"] == round(float(_rows(out / "results.csv")[
        ("all", "all")]["success_low"]), 4)
    files = set(list_artifacts(cfg, run_id, "eval"))
    assert {"eval/results.md", "eval/results.csv", "eval/metrics.json"} <= files
    assert len(list_artifacts(cfg, run_id, "eval/videos")) == 3

    again = evaluate(cfg, policy, out_dir=out, track=False)  # same seed, 1 worker, in-process
    assert again.table == table and (out / "results.csv").read_text() == csv_text

    # the policy logged by `pac train` to MLflow evaluates the same as the folder it came from
    from pac.cli import main

    train_run = json.loads((tmp_path / "pretrain" / "mlflow_run.json").read_text())["run_id"]
    assert main(["eval", "--checkpoint", f"runs:/{train_run}/policy_model", *common,
                 "--no-track",
                 "--set", "eval.episodes_per_task=2", "--set", "eval.videos_per_task=0",
                 "--set", "eval.workers=1", "--out", str(tmp_path / "from_mlflow")]) == 0
    assert (tmp_path / "from_mlflow" / "results.csv").read_text() == csv_text


def test_reused_environment_replays_a_fresh_one_and_new_weights_reload(tmp_path):
    import numpy as np

    from pac.envs import make_env
    from pac.evaluation.evaluator import Job, PolicySpec, _run_job, episode_env
    from pac.evaluation.rollout import random_policy, run_episode

    for task in ("point_mass.easy", "reacher.easy"):
        for seed in (3, 4, 3):
            fresh = run_episode(make_env(task, seed, 30), random_policy(task, seed), task)
            reused = run_episode(episode_env(task, seed, 30), random_policy(task, seed), task)
            np.testing.assert_array_equal(fresh.observations, reused.observations)
            np.testing.assert_array_equal(fresh.rewards, reused.rewards)

    ckpt = tiny_checkpoint(tmp_path)
    job = Job(PolicySpec("checkpoint", str(ckpt)), "cartpole.balance", 0, 0, 30)
    before = _run_job(job)
    assert _run_job(job)["return"] == before["return"]  # cached server, same episode
    tiny_checkpoint(tmp_path, "model.num_action_bins=5")  # same folder, new weights:
    import torch

    from pac.checkpoint import load_inference_checkpoint, save_inference_checkpoint

    model, cfg, tokenizer = load_inference_checkpoint(ckpt)
    with torch.no_grad():  # ... a policy that always pushes with a = +1 (the last bin)
        model.policy_decoder.head.weight.zero_()
        model.policy_decoder.head.bias.zero_()
        model.policy_decoder.head.bias[4] = 10.0
    save_inference_checkpoint(model, cfg, ckpt, tokenizer)
    after = _run_job(job)
    assert len(after["latencies"]) == 30 and after["return"] != before["return"]


def test_merged_domain_folders_equal_one_joint_evaluation(tmp_path):
    from pac.evaluation.evaluator import merge_evaluations

    cfg = _cfg(tmp_path, "eval.episodes_per_task=3")
    tasks = ["cartpole.balance", "point_mass.easy"]
    joint = evaluate(cfg, tasks=tasks, policy="random", out_dir=tmp_path / "joint", track=False)
    parts = [evaluate(cfg, tasks=[t], policy="random", out_dir=tmp_path / t, track=False)
             for t in tasks]
    merged = merge_evaluations([p.out_dir for p in parts], tmp_path / "merged", cfg)
    assert (merged.out_dir / "results.csv").read_text() == (
        joint.out_dir / "results.csv").read_text()
    assert merged.rows == joint.rows and "| **All** | 2 | 6 |" in merged.table
    with pytest.raises(ValueError, match="more than one evaluation folder"):
        merge_evaluations([parts[0].out_dir, parts[0].out_dir], tmp_path / "bad", cfg)
    with pytest.raises(FileNotFoundError, match="not an evaluation folder"):
        merge_evaluations([tmp_path], tmp_path / "bad", cfg)


def test_review_videos_show_a_success_and_a_failure_at_160_pixels(tmp_path):
    """Random actions on cartpole.balance for 20 steps keep the pole up in some episodes only
    (seed 0): the videos are the first success and the first failure of episodes.csv, rendered
    at >= 160 pixels, labelled in their names, on the evaluation run and the parent run."""
    import imageio.v3 as iio

    from pac.evaluation.evaluator import log_videos
    from pac.tracking import Tracker, list_artifacts

    cfg = _cfg(tmp_path, *_tracking(tmp_path), "eval.videos_per_task=2", "eval.seed=0",
               "eval.max_steps=20")
    parent = Tracker(cfg, "pac-flow", tags={"pac_role": "flow"})
    result = evaluate(cfg, tasks=["cartpole.balance"], policy="random",
                      tracking_parent_run=parent.run_id)
    with open(result.out_dir / "episodes.csv") as fh:
        episodes = sorted(csv.DictReader(fh), key=lambda r: int(r["episode"]))
    wins = [r for r in episodes if r["success"] == "True"]
    losses = [r for r in episodes if r["success"] == "False"]
    assert wins and losses, "the setting must give both outcomes"
    expected = {
        f"cartpole.balance_ep{r['episode']}_{outcome}_return{float(r['return']):.1f}.gif"
        for r, outcome in ((wins[0], "success"), (losses[0], "failure"))
    }
    assert {v.name for v in result.videos} == expected
    for video in result.videos:
        frames = iio.imread(video, index=None)
        assert frames.shape[0] == 21  # the reset frame and one per step
        assert frames.shape[1] >= 160 and frames.shape[2] >= 160
        # native renders: neighbouring pixels differ (a 2x upscale repeats every pixel pair)
        assert (frames[:, :160:2, :160:2] != frames[:, 1:160:2, 1:160:2]).any()
    child = {p.rsplit("/", 1)[1] for p in list_artifacts(cfg, result.mlflow_run_id,
                                                          "eval/videos")}
    assert child == expected
    log_videos(cfg, parent.run_id, result.videos)
    on_parent = {p.rsplit("/", 1)[1] for p in list_artifacts(cfg, parent.run_id,
                                                              "evaluation/videos")}
    assert on_parent == expected
    parent.finish()

    none = evaluate(_cfg(tmp_path, "eval.max_steps=20"), tasks=["cartpole.balance"],
                    policy="random", track=False)
    assert none.videos == [] and not list((none.out_dir / "videos").glob("*"))
