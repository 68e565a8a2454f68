"""train.eval_every: evaluations during training, in MLflow and eval_points.csv, change nothing."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from pac.config import ConfigError, load_config
from tests.train.conftest import train_config

HELD_OUT = "reacher.easy"


def test_eval_every_must_be_non_negative():
    with pytest.raises(ConfigError, match=r"^train\.eval_every=-1 is outside") as exc:
        load_config(overrides=["train.eval_every=-1"])
    assert "\n" not in str(exc.value)
    with pytest.raises(ConfigError, match=r"^train\.eval_episodes=0 is outside"):
        load_config(overrides=["train.eval_episodes=0"])


def _pct_expert_by_hand(folder, task: str) -> float:
    """Mean (R - R_random) / (R_expert - R_random) of `task` from the evaluation's own files."""
    refs = json.loads((folder / "references.json").read_text())
    (ref,) = [v for k, v in refs.items() if k.split("|")[0] == task]
    with open(folder / "episodes.csv") as fh:
        returns = [float(r["return"]) for r in csv.DictReader(fh) if r["task"] == task]
    assert len(returns) == 2
    return float(np.mean([(r - ref["random"]) / (ref["expert"] - ref["random"])
                          for r in returns]))


def test_eval_every_logs_points_and_leaves_training_unchanged(
    data_root, mlflow_root, tmp_path, reference_run
):
    from pac.scaling.laws import load_points
    from pac.tracking import metric_history
    from pac.train import train
    from pac.train.plan import parameter_counts, training_flops_per_update

    cfg = train_config(tmp_path / "run", mlflow_root, "train.eval_every=10",
                       "train.eval_episodes=2", f"eval.held_out_tasks=[{HELD_OUT}]")
    result = train(cfg, data_root=data_root)

    # Training is untouched: the same weights as the reference run without evaluations.
    ref_cfg, ref = reference_run
    got = load_file(str(result.policy_dir / "model.safetensors"))
    want = load_file(str(ref.policy_dir / "model.safetensors"))
    assert got.keys() == want.keys()
    assert all(torch.equal(got[k], want[k]) for k in want)
    # ... and the same random states in the update-20 checkpoint, written after the update-10
    # evaluation (which builds a model from the global torch generator): resume stays exact
    rng = "rng_rank0.json"
    assert (json.loads((result.checkpoint / rng).read_text())
            == json.loads((ref.checkpoint / rng).read_text()))

    # eval_points.csv: updates 10 and 20, FLOPs = updates x App. E.2 count per update.
    with open(result.out_dir / "eval_points.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["step"]) for r in rows] == [10, 20]
    fpu = training_flops_per_update(cfg)
    for row in rows:
        step = int(row["step"])
        assert float(row["flops"]) == pytest.approx(step * fpu, rel=1e-12)
        folder = result.out_dir / "evaluations" / f"update-{step:07d}"
        train_tasks = ["cartpole.balance", "point_mass.easy"]
        by_hand = np.mean([_pct_expert_by_hand(folder, t) for t in train_tasks])
        assert float(row["return_norm"]) == pytest.approx(by_hand, rel=1e-9, abs=1e-12)
        assert float(row["held_out_return_norm"]) == pytest.approx(
            _pct_expert_by_hand(folder, HELD_OUT), rel=1e-9, abs=1e-12)
        with open(folder / "episodes.csv") as fh:
            episodes = list(csv.DictReader(fh))
        ok = [r["success"] == "True" for r in episodes if r["task"] in train_tasks]
        assert float(row["success"]) == pytest.approx(np.mean(ok))
        assert not (folder / "policy").exists()  # the exported weights are not kept

    # MLflow: the training run has the same points at step = update.
    def history(key: str) -> list[tuple[int, float]]:
        return metric_history(cfg, result.run_id, key)

    for key, col in (("eval/return_norm", "return_norm"), ("eval/success", "success"),
                     ("eval/flops", "flops"),
                     ("eval_held_out/return_norm", "held_out_return_norm")):
        assert [s for s, _ in history(key)] == [10, 20]
        assert [v for _, v in history(key)] == pytest.approx([float(r[col]) for r in rows])

    # The CSV is one run's input to `pac scaling fit`.
    (run,) = load_points(result.out_dir / "eval_points.csv")
    assert run.params == parameter_counts(cfg.model)[0]
    assert run.flops_per_update == pytest.approx(fpu)
    assert list(run.steps) == [10, 20]

    # Resume from update 10: the points up to 10 are kept, those after it are evaluated again
    # (a stale update-20 row is replaced), and the update-20 point equals the uninterrupted one.
    again = tmp_path / "again" / "run"
    shutil.copytree(result.out_dir, again)
    shutil.rmtree(again / "checkpoints" / "step_00000020")
    stale = [dict(r) for r in rows]
    stale[1]["return_norm"] = "0.123456"
    with open(again / "eval_points.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(stale)
    cfg2 = train_config(again, mlflow_root, "train.eval_every=10", "train.eval_episodes=2",
                        f"eval.held_out_tasks=[{HELD_OUT}]")
    resumed = train(cfg2, resume=True, data_root=data_root)
    assert resumed.start_step == 10
    with open(again / "eval_points.csv") as fh:
        assert list(csv.DictReader(fh)) == rows

    # Killed between the update-10 checkpoint and its evaluation: the resumed run evaluates
    # update 10 first, and both points equal the uninterrupted run's.
    killed = tmp_path / "killed" / "run"
    shutil.copytree(result.out_dir, killed)
    shutil.rmtree(killed / "checkpoints" / "step_00000020")
    (killed / "eval_points.csv").unlink()
    cfg3 = train_config(killed, mlflow_root, "train.eval_every=10", "train.eval_episodes=2",
                        f"eval.held_out_tasks=[{HELD_OUT}]")
    assert train(cfg3, resume=True, data_root=data_root).start_step == 10
    with open(killed / "eval_points.csv") as fh:
        assert list(csv.DictReader(fh)) == rows


def test_evaluated_updates_are_the_multiples_and_the_last_of_a_long_enough_run():
    from pac.train.periodic_eval import is_point

    def points(every: int, steps: int) -> list[int]:
        return [n for n in range(1, steps + 1) if is_point(n, every, steps)]

    assert points(1000, 3000) == [1000, 2000, 3000]  # the default run: three points
    assert points(1000, 2500) == [1000, 2000, 2500]  # the last update too
    assert points(1000, 999) == []  # shorter than eval_every: not evaluated (tests' tiny runs)
    assert points(0, 50) == []
    assert points(7, 20) == [7, 14, 20]
