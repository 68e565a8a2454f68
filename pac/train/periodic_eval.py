"""Evaluation during training (`train.eval_every`, App. E.1): return against updates and FLOPs.

Every `train.eval_every` updates (and after the last one; a run shorter than
`train.eval_every` is not evaluated: :func:`is_point`) rank 0 evaluates the current online
weights theta with :func:`pac.evaluation.evaluator.evaluate` (the same harness, statistics and
references as ``pac eval``): the weights are gathered into an fp32 copy of the optimiser's
weights (:func:`pac.train.target.copy_master_weights`: the ones the run exports), exported as
an inference checkpoint into ``<out_dir>/evaluations/update-<n>/policy``, evaluated in this
process (``eval.workers`` 1, ``train.eval_episodes`` episodes a task, no videos, no MLflow runs of
its own) on the training tasks and, reported separately, on ``eval.held_out_tasks``; the
exported weights are deleted afterwards, the tables (``results.csv``, ``episodes.csv``,
``references.json``) stay.

One point per evaluation:

* ``return_norm``: the mean over the training tasks of each task's mean % of expert / 100,
  i.e. (R - R_random) / (R_expert - R_random) (:func:`pac.evaluation.stats.percent_of_expert`);
  tasks without an expert reference are left out; NaN when none has one;
* ``success``: the mean over the training tasks of the success rate (a fraction);
* ``held_out_return_norm`` / ``held_out_success``: the same over ``eval.held_out_tasks``;
* ``flops``: training FLOPs so far, updates x :func:`pac.train.plan.training_flops_per_update`;
* ``tokens``: input tokens consumed so far, updates x
  :func:`pac.train.plan.training_tokens_per_update` (the D of eq. 4).

They go to the training run's MLflow metrics ``eval/return_norm``, ``eval/success``,
``eval/flops``, ``eval_held_out/return_norm``, ``eval_held_out/success`` at step = update, and to
``<out_dir>/eval_points.csv`` (atomically rewritten after every evaluation; a resumed run keeps
the points up to the update it resumed from). The CSV is one run's input to ``pac scaling fit``
(columns ``run, family, params, step, flops, tokens, return``; ``return`` is ``return_norm``
clipped to [0, 1], the range the fit takes, since single evaluations can fall just outside it).

Training is unchanged by it: the Python, NumPy and torch (CPU and accelerator) global random
states are saved before and restored after, the loss's generator and the data stream are never
touched, episodes use ``eval.seed`` (:func:`pac.evaluation.evaluator.episode_seed`) and the torch
thread count is put back (tested: a run with ``eval_every`` ends with weights equal to one
without).
"""

from __future__ import annotations

import copy
import csv
import io
import math
import random
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pac.config import PACConfig
from pac.io import atomic_write_text

POINTS_FILE = "eval_points.csv"
EVAL_DIR = "evaluations"
COLUMNS = ("run", "family", "params", "step", "flops", "tokens", "return", "return_norm", "success",
           "held_out_return_norm", "held_out_success")


def is_point(step: int, every: int, steps: int) -> bool:
    """Whether update `step` is evaluated: a multiple of `every`, or the last update of a run
    at least `every` long (the default `every` leaves short runs, e.g. tests, unevaluated)."""
    return bool(every) and every <= steps and (step % every == 0 or step == steps)


@contextmanager
def preserved_rng(device: torch.device) -> Iterator[None]:
    """Run the block and put every global random state (and the torch thread count) back."""
    py, np_state, threads = random.getstate(), np.random.get_state(), torch.get_num_threads()
    devices = [device] if device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices):  # the CPU state and these devices
            yield
    finally:
        random.setstate(py)
        np.random.set_state(np_state)
        torch.set_num_threads(threads)


def eval_config(cfg: PACConfig) -> PACConfig:
    """`cfg` with the evaluation settings of a check during training: `train.eval_episodes`
    episodes a task, one worker (this process), no videos."""
    from pac.config import validate

    out = copy.deepcopy(cfg)
    out.eval.episodes_per_task = cfg.train.eval_episodes
    out.eval.workers = 1
    out.eval.videos_per_task = 0
    validate(out)
    return out


def section_means(rows: list[dict[str, Any]], section: str) -> tuple[float, float]:
    """(mean % of expert / 100, mean success fraction) over the task rows of `section`."""
    tasks = [r for r in rows if r["level"] == "task" and r["section"] == section]
    pcts = [float(r["pct_expert"]) / 100 for r in tasks if math.isfinite(float(r["pct_expert"]))]
    norm = float(np.mean(pcts)) if pcts else math.nan
    success = float(np.mean([float(r["success_rate"]) / 100 for r in tasks])) if tasks else math.nan
    return norm, success


def evaluate_now(
    cfg: PACConfig, model: torch.nn.Module, out_dir: Path, step: int, tokenizer: Path,
    horizons: dict[str, int],
) -> dict[str, float]:
    """Evaluate `model` (fp32 on the CPU) after `step` updates; returns the point's metrics."""
    from pac.checkpoint import save_inference_checkpoint
    from pac.evaluation.evaluator import default_tasks, evaluate, release_checkpoint

    folder = out_dir / EVAL_DIR / f"update-{step:07d}"
    folder.mkdir(parents=True, exist_ok=True)
    earlier = sorted(p for p in (out_dir / EVAL_DIR).glob("update-*/references.json")
                     if p.parent != folder)
    if earlier and not (folder / "references.json").exists():  # references are measured once
        shutil.copyfile(earlier[-1], folder / "references.json")
    policy = save_inference_checkpoint(model, cfg, folder / "policy", tokenizer, horizons)
    try:
        result = evaluate(eval_config(cfg), policy, default_tasks(cfg), out_dir=folder,
                          track=False)
    finally:
        release_checkpoint(policy)
        shutil.rmtree(policy, ignore_errors=True)
    norm, success = section_means(result.rows, "train")
    held_norm, held_success = section_means(result.rows, "held_out")
    return {"return_norm": norm, "success": success, "held_out_return_norm": held_norm,
            "held_out_success": held_success}


def mlflow_metrics(point: dict[str, float]) -> dict[str, float]:
    """A point's MLflow metrics (NaN ones, e.g. no held-out tasks, are not logged)."""
    keys = {"eval/return_norm": "return_norm", "eval/success": "success", "eval/flops": "flops",
            "eval_held_out/return_norm": "held_out_return_norm",
            "eval_held_out/success": "held_out_success"}
    return {k: float(point[v]) for k, v in keys.items() if math.isfinite(float(point[v]))}


def read_points(path: Path) -> list[dict[str, str]]:
    """The rows of an eval_points.csv ([] when there is none)."""
    if not path.is_file():
        return []
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def write_points(path: Path, rows: list[dict[str, Any]]) -> None:
    """eval_points.csv (atomically), NaN as an empty cell."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if isinstance(row[k], float) and math.isnan(row[k]) else row[k]
                         for k in COLUMNS})
    atomic_write_text(path, buf.getvalue())


def point_row(cfg: PACConfig, run: str, params: int, step: int, flops: float,
              metrics: dict[str, float], tokens: int | None = None) -> dict[str, Any]:
    """One eval_points.csv row in the `pac scaling fit` input format."""
    from pac.train.plan import training_tokens_per_update

    norm = metrics["return_norm"]
    if tokens is None:
        tokens = step * training_tokens_per_update(cfg)
    return {"run": run, "family": cfg.loss.variant, "params": params, "step": step,
            "flops": flops, "tokens": tokens,
            "return": min(max(norm, 0.0), 1.0) if math.isfinite(norm) else norm, **metrics}
