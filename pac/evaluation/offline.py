"""Offline evaluation of a policy on held-out episodes of tasks without a simulator.

A robot's data has no environment to roll a policy out in, so a policy is measured on recorded
episodes it was not trained on, per task:

* **Held-out split** (:func:`holdout_masks`). With ``eval.offline_holdout = k`` (> 0), every k-th
  episode of a task without a simulator in each store group, counted in store order (shards by
  name, which is append order, then rows), i.e. episodes k-1, 2k-1, ... (0-based), is held out:
  the sampler never draws a window of it (:class:`pac.data.sampler.TrajectorySampler`) and this
  module evaluates exactly those. Appending data keeps earlier episodes on their side. The split
  the *checkpoint* was trained with (its ``config.yaml``) decides, not the params in use now.
* **Action log-likelihood per dimension**: log pi(bin(a_j) | s) of the factorised categorical at
  the nearest of the N_B bins to the data action a_j (mapped into [-1, 1] with the task's action
  range, values outside clipped to the edge bins, as the BC loss reads them), in nats; also as a
  continuous density in the robot's units: log pi(bin) - log(width of the bin's cell), cells
  centred on the bins (edge cells half as wide), in nats per robot unit.
* **Action error per dimension** in the robot's units: |decode(pi) - a_j| with ``argmax`` (the
  most likely bin) and ``mean`` (the expected bin centre) decoding, both mapped back with the
  action range (:func:`pac.tasks.from_unit`); mean absolute error over the held-out steps.
* **Q against the Monte-Carlo return** of the data: G_t = r_t + gamma d_t G_{t+1} with the step
  discounts d_t of the store (0 after a terminal step) and ``loss.gamma``. A truncated episode
  (last discount > 0) misses its tail: it is taken as 0 and, because Q bootstraps past the cut,
  the steps whose missing weight gamma^(L-t) exceeds :data:`TAIL_WEIGHT` are left out of the
  comparison (counted in ``pairs_truncated``). Q(s_t, a_t) is E[Q] of the data action. Reported:
  Pearson and Spearman correlation, mean error, and a calibration table and plot (pairs in
  :data:`CALIBRATION_BINS` equal-count bins of Q: mean Q against mean return).

Outputs in ``out_dir``: ``offline.md``, ``offline.csv`` (one row per task and action dimension),
``calibration.csv``, ``pairs.csv`` (every compared step), ``metrics.json`` and
``calibration.png``; MLflow through :func:`pac.tracking.log_offline_evaluation`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

#: missing tail weight gamma^(L-t) above which a step of a truncated episode is not compared
TAIL_WEIGHT = 0.05
#: equal-count Q bins of the calibration table and plot
CALIBRATION_BINS = 10
#: held-out steps scored per forward pass
CHUNK = 256


# --- the split ------------------------------------------------------------------------------------


def holdout_masks(shards: Sequence[Any], every: int) -> dict[str, np.ndarray]:
    """{shard key: bool [episodes]} of held-out episodes among `shards` (one group and task).

    Episodes are counted in store order (shards sorted by name, then rows); episode i is held
    out when ``i % every == every - 1``. ``every`` 0 holds out nothing."""
    out: dict[str, np.ndarray] = {}
    first = 0
    for shard in sorted(shards, key=lambda s: s.name):
        n = len(shard.index)
        ordinal = first + np.arange(n)
        out[shard.key] = (ordinal % every == every - 1) if every > 0 else np.zeros(n, bool)
        first += n
    return out


def has_simulator(task: str) -> bool:
    """Whether `task` can be rolled out (an unknown name counts as a simulator task)."""
    from pac.tasks import TASKS

    return task not in TASKS or bool(TASKS[task].simulator)


# --- returns and statistics -----------------------------------------------------------------------


def mc_returns(rewards: np.ndarray, discounts: np.ndarray, gamma: float) -> np.ndarray:
    """Discounted Monte-Carlo returns G_t = r_t + gamma d_t G_{t+1} of one episode (G_L = 0)."""
    out = np.zeros(len(rewards), np.float64)
    g = 0.0
    for t in range(len(rewards) - 1, -1, -1):
        g = float(rewards[t]) + gamma * float(discounts[t]) * g
        out[t] = g
    return out


def missing_tail(discounts: np.ndarray, gamma: float) -> np.ndarray:
    """Weight gamma^(L-t) d_t ... d_{L-1} of the unrecorded tail G_L in G_t: 0 everywhere when
    the episode terminated (d_{L-1} = 0), else the share a bootstrapping Q would add."""
    weight = np.zeros(len(discounts))
    w = 1.0
    for t in range(len(discounts) - 1, -1, -1):
        w *= gamma * float(discounts[t])
        weight[t] = w
    return weight


def _ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n with ties given their average rank."""
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x), np.float64)
    sorted_x = x[order]
    i = 0
    while i < len(x):
        j = i
        while j + 1 < len(x) and sorted_x[j + 1] == sorted_x[i]:
            j += 1
        ranks[order[i : j + 1]] = 0.5 * (i + j) + 1.0
        i = j + 1
    return ranks


def pearson(x: Sequence[float], y: Sequence[float]) -> float:
    """Pearson correlation; NaN for fewer than 2 pairs or a constant side."""
    a, b = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if len(a) < 2:
        return math.nan
    a, b = a - a.mean(), b - b.mean()
    den = math.sqrt(float(a @ a) * float(b @ b))
    return float(a @ b) / den if den > 0 else math.nan


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman rank correlation (Pearson of average ranks)."""
    a, b = np.asarray(x, np.float64), np.asarray(y, np.float64)
    return pearson(_ranks(a), _ranks(b)) if len(a) >= 2 else math.nan


def calibration(q: np.ndarray, returns: np.ndarray, bins: int = CALIBRATION_BINS
                ) -> list[dict[str, float]]:
    """Pairs sorted by Q in up to `bins` equal-count bins: mean Q, mean return, count."""
    order = np.argsort(np.asarray(q), kind="mergesort")
    rows = []
    for part in np.array_split(order, min(bins, len(order))) if len(order) else []:
        rows.append({"q_mean": float(np.mean(q[part])),
                     "return_mean": float(np.mean(returns[part])), "count": float(len(part))})
    return rows


# --- the policy's numbers on recorded steps -------------------------------------------------------


def bin_log_likelihood(logits: np.ndarray, unit_actions: np.ndarray) -> np.ndarray:
    """log pi(bin(a_j)) [N, A] of actions in [-1, 1] [N, A] under logits [N, A, N_B]."""
    import torch

    from pac.model.distributions import actions_to_bins

    lt = torch.as_tensor(logits, dtype=torch.float32)
    index = actions_to_bins(torch.as_tensor(unit_actions, dtype=torch.float32), lt.shape[-1])
    log_p = torch.log_softmax(lt, dim=-1)
    return log_p.gather(-1, index.unsqueeze(-1)).squeeze(-1).double().numpy()


def log_cell_width(unit_actions: np.ndarray, n_bins: int, low: np.ndarray,
                   high: np.ndarray) -> np.ndarray:
    """log of the robot-unit width of the cell of each action's bin [N, A] (edge cells half)."""
    import torch

    from pac.model.distributions import actions_to_bins

    index = actions_to_bins(torch.as_tensor(unit_actions, dtype=torch.float32), n_bins).numpy()
    width = (np.asarray(high, np.float64) - np.asarray(low, np.float64)) / (n_bins - 1)
    cell = np.where((index == 0) | (index == n_bins - 1), 0.5, 1.0) * width
    return np.log(cell)


@dataclass
class StepScores:
    """The policy's numbers on N recorded steps of one task (A = the task's action dims)."""

    log_lik: np.ndarray  # [N, A] log pi(bin of the data action), nats
    log_density: np.ndarray  # [N, A] as a density in the robot's units, nats per unit
    argmax: np.ndarray  # [N, A] argmax decoding in robot units
    mean: np.ndarray  # [N, A] mean decoding in robot units
    q: np.ndarray  # [N] E[Q(s_t, a_t)] of the data action


def score_steps(server: Any, task: str, proprio: np.ndarray, actions: np.ndarray,
                images: np.ndarray | None = None) -> StepScores:
    """Score recorded steps (raw proprio [N, N^P_task], actions [N, N^A_task] in robot units,
    images [N, cams, H, W, 3] or None) with a loaded :class:`PolicyServer`, in chunks."""
    import torch

    from pac.batch import Observation
    from pac.model.distributions import expected_value, mean_action, mode
    from pac.tasks import from_unit, proprio_features, to_unit

    inp, m = server._task_input(task), server.cfg.model
    spec, n_a = inp.spec, inp.spec.num_actions
    unit = to_unit(np.asarray(actions, np.float32), spec.low, spec.high)
    feats = proprio_features(spec, np.asarray(proprio, np.float32))
    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("logits", "argmax", "mean", "q")}
    device = next(server.model.parameters()).device
    with torch.inference_mode():
        for s in range(0, len(feats), CHUNK):
            f = torch.from_numpy(np.array(feats[s : s + CHUNK], np.float32))  # a copy: writable
            b = f.shape[0]
            padded = torch.zeros(b, m.num_proprio)
            padded[:, : f.shape[1]] = f
            obs = Observation(padded, inp.proprio_mask.expand(b, -1),
                              inp.text.expand(b, -1), inp.text_mask.expand(b, -1))
            if m.num_images:
                pix = torch.zeros(b, m.num_images, m.image_size, m.image_size, 3, dtype=torch.uint8)
                cams = torch.zeros(b, m.num_images, dtype=torch.bool)
                if images is not None:
                    c = min(images.shape[1], m.num_images)
                    pix[:, :c] = torch.from_numpy(np.array(images[s : s + CHUNK, :c], np.uint8))
                    cams[:, :c] = True
                obs.images, obs.image_mask = pix, cams
            obs = obs.to(device)
            mask = inp.action_mask.to(device).expand(b, -1)
            act = torch.zeros(b, 1, m.num_actions, device=device)
            act[:, 0, :n_a] = torch.from_numpy(unit[s : s + CHUNK]).to(device)
            with server._autocast():
                z = server.model.encode(obs)
                logits = server.model.policy_logits(z).float()
                q_logits = server.model.q_logits(z, act, mask).float()
            q = expected_value(q_logits, server.cfg.loss.value_min, server.cfg.loss.value_max)
            parts["logits"].append(logits[:, :n_a].cpu().numpy())
            parts["argmax"].append(mode(logits, mask)[:, :n_a].cpu().numpy())
            parts["mean"].append(mean_action(logits, mask)[:, :n_a].cpu().numpy())
            parts["q"].append(q[:, 0].double().cpu().numpy())
    cat = {k: np.concatenate(v) for k, v in parts.items()}
    log_lik = bin_log_likelihood(cat["logits"], unit)
    n_bins = cat["logits"].shape[-1]
    return StepScores(
        log_lik=log_lik,
        log_density=log_lik - log_cell_width(unit, n_bins, spec.low, spec.high),
        argmax=from_unit(cat["argmax"], spec.low, spec.high),
        mean=from_unit(cat["mean"], spec.low, spec.high),
        q=cat["q"],
    )


# --- the evaluation -------------------------------------------------------------------------------


@dataclass
class OfflineResult:
    out_dir: Path
    rows: list[dict[str, Any]]  # one per task and action dimension (offline.csv)
    metrics: dict[str, Any]  # metrics.json: per task
    calibration: dict[str, list[dict[str, float]]] = field(default_factory=dict)
    mlflow_run_id: str | None = None

    @property
    def table(self) -> str:
        return (self.out_dir / "offline.md").read_text()


def held_out_episodes(store: Any, groups: Sequence[str], task: str, every: int
                      ) -> list[tuple[Any, int]]:
    """(shard, row) of every held-out episode of `task` in `groups`, in store order."""
    out = []
    for group in groups:
        shards = [s for s in store.shards if s.group == group and s.task == task]
        masks = holdout_masks(shards, every)
        for shard in sorted(shards, key=lambda s: s.name):
            out += [(shard, int(r)) for r in np.flatnonzero(masks[shard.key])]
    return out


def offline_tasks(cfg: Any) -> list[str]:
    """The training tasks of `cfg` that have no simulator, in order."""
    from pac.evaluation.evaluator import default_tasks

    return [t for t in default_tasks(cfg) if not has_simulator(t)]


def evaluate_offline(
    cfg: Any,
    checkpoint_dir: str | Path,
    tasks: list[str] | None = None,
    *,
    out_dir: str | Path | None = None,
    track: bool = True,
    tracking_parent_run: str | None = None,
    source: str | None = None,
) -> OfflineResult:
    """Evaluate the checkpoint on the held-out episodes of `tasks` (default: its training tasks
    without a simulator) in the store under ``cfg.data.root``; writes the outputs and logs them.

    Raises ValueError (one line) for a task with a simulator, a checkpoint trained without a
    held-out split, or a task with no held-out episode in the store."""
    from pac.checkpoint import load_checkpoint_config
    from pac.data import EpisodeStore, store_root
    from pac.evaluation.rollout import PolicyServer

    ckpt_cfg = load_checkpoint_config(checkpoint_dir)
    every = ckpt_cfg.eval.offline_holdout
    tasks = list(dict.fromkeys(tasks if tasks is not None else offline_tasks(ckpt_cfg)))
    if not tasks:
        raise ValueError("no tasks without a simulator to evaluate offline")
    rolled = [t for t in tasks if has_simulator(t)]
    if rolled:
        raise ValueError(f"task {rolled[0]} has a simulator: its episodes are trained on, none"
                         " is held out; evaluate it with `pac eval` (rollouts)")
    if every < 2:
        raise ValueError(f"{checkpoint_dir}: the policy was trained with eval.offline_holdout="
                         f"{every}: no episodes were held out to evaluate on")
    groups = [g.name for g in ckpt_cfg.data.groups]
    store = EpisodeStore(store_root(cfg.data.root))
    episodes = {t: held_out_episodes(store, groups, t, every) for t in tasks}
    empty = [t for t, eps in episodes.items() if not eps]
    if empty:
        raise ValueError(f"task {empty[0]}: no held-out episode in {store.root} (groups"
                         f" {', '.join(groups)}; 1 in {every} episodes of a task is held out:"
                         f" it needs at least {every} episodes)")
    server = PolicyServer.load(checkpoint_dir, precision=cfg.eval.precision)
    gamma = float(ckpt_cfg.loss.gamma)
    rows: list[dict[str, Any]] = []
    metrics: dict[str, Any] = {"gamma": gamma, "holdout_every": every, "tasks": {}}
    pair_rows: list[dict[str, Any]] = []
    calib: dict[str, list[dict[str, float]]] = {}
    for task in tasks:
        spec = server._task_input(task).spec
        names = list(spec.action_names) or [f"a{j}" for j in range(spec.num_actions)]
        ll, dens, err_max, err_mean, q_all, g_all, keep_all = [], [], [], [], [], [], []
        for shard, row in episodes[task]:
            start = int(shard.index["start"].iloc[row])
            length = int(shard.index["length"].iloc[row])
            sl = slice(start, start + length)
            acts = np.asarray(shard.actions[sl], np.float32)
            images = np.asarray(shard.images[sl]) if shard.images is not None else None
            s = score_steps(server, task, np.asarray(shard.proprio[sl]), acts, images)
            rewards, discounts = np.asarray(shard.rewards[sl]), np.asarray(shard.discounts[sl])
            g = mc_returns(rewards, discounts, gamma)
            keep = missing_tail(discounts, gamma) <= TAIL_WEIGHT
            ll.append(s.log_lik)
            dens.append(s.log_density)
            err_max.append(np.abs(s.argmax - acts))
            err_mean.append(np.abs(s.mean - acts))
            q_all.append(s.q)
            g_all.append(g)
            keep_all.append(keep)
            episode = int(shard.index["episode"].iloc[row])
            pair_rows += [{"task": task, "shard": shard.key, "episode": episode, "step": t,
                           "q": float(s.q[t]), "return": float(g[t]), "compared": bool(keep[t])}
                          for t in range(length)]
        ll_a, dens_a = np.concatenate(ll), np.concatenate(dens)
        e_max, e_mean = np.concatenate(err_max), np.concatenate(err_mean)
        keep = np.concatenate(keep_all)
        q, ret = np.concatenate(q_all)[keep], np.concatenate(g_all)[keep]
        for j, name in enumerate(names):
            rows.append({"task": task, "dimension": name, "log_lik": float(ll_a[:, j].mean()),
                         "log_density": float(dens_a[:, j].mean()),
                         "mae_argmax": float(e_max[:, j].mean()),
                         "mae_mean": float(e_mean[:, j].mean()),
                         "low": float(spec.low[j]), "high": float(spec.high[j])})
        calib[task] = calibration(q, ret)
        metrics["tasks"][task] = {
            "episodes": len(episodes[task]), "steps": int(len(ll_a)),
            "log_lik": float(ll_a.sum(1).mean()),  # per step, summed over dimensions
            "log_lik_per_dim": {n: float(ll_a[:, j].mean()) for j, n in enumerate(names)},
            "log_density_per_dim": {n: float(dens_a[:, j].mean()) for j, n in enumerate(names)},
            "mae_argmax": {n: float(e_max[:, j].mean()) for j, n in enumerate(names)},
            "mae_mean": {n: float(e_mean[:, j].mean()) for j, n in enumerate(names)},
            "q_pearson": pearson(q, ret), "q_spearman": spearman(q, ret),
            "q_bias": float(np.mean(q - ret)) if len(q) else math.nan,
            "pairs": int(len(q)), "pairs_truncated": int((~keep).sum()),
        }
    out = Path(out_dir or Path(cfg.eval.out_dir) / "offline")
    out.mkdir(parents=True, exist_ok=True)
    _write(out, rows, metrics, pair_rows, calib, Path(checkpoint_dir).name)
    result = OfflineResult(out, rows, metrics, calib)
    if track:
        from pac.tracking import log_offline_evaluation

        result.mlflow_run_id = log_offline_evaluation(
            cfg, out, _flat_metrics(metrics), tracking_parent_run,
            {"eval.offline.checkpoint": source or str(checkpoint_dir),
             "eval.offline.holdout_every": every, "eval.offline.gamma": gamma,
             "eval.offline.tasks": ",".join(tasks)})
    return result


def _flat_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """metrics.json per task as MLflow keys ``offline/<task>/<name>[/<dimension>]``."""
    out: dict[str, float] = {}
    for task, m in metrics["tasks"].items():
        for key, value in m.items():
            if isinstance(value, dict):
                out |= {f"offline/{task}/{key}/{d}": float(v) for d, v in value.items()}
            else:
                out[f"offline/{task}/{key}"] = float(value)
    return out


def _json(value: Any) -> Any:
    """NaN as null (strict JSON)."""
    if isinstance(value, dict):
        return {k: _json(v) for k, v in value.items()}
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _fmt(x: float) -> str:
    return "n/a" if not math.isfinite(x) else f"{x:.3f}"


def _write(out: Path, rows: list[dict[str, Any]], metrics: dict[str, Any],
           pairs: list[dict[str, Any]], calib: dict[str, list[dict[str, float]]],
           title: str) -> None:
    """offline.md / offline.csv / calibration.csv / pairs.csv / calibration.png (atomic)."""
    import pandas as pd

    from pac.io import atomic_write, atomic_write_text
    from pac.plots import offline_calibration

    lines = [f"## Offline evaluation: {title} (held-out episodes: 1 in"
             f" {metrics['holdout_every']} of a task; gamma {metrics['gamma']:g})", "",
             "| task | episodes | steps | log-lik/step | Q pearson | Q spearman | Q - return |"
             " pairs (truncated tails left out) |", "|---|---|---|---|---|---|---|---|"]
    for task, m in metrics["tasks"].items():
        lines.append(f"| {task} | {m['episodes']} | {m['steps']} | {_fmt(m['log_lik'])} |"
                     f" {_fmt(m['q_pearson'])} | {_fmt(m['q_spearman'])} | {_fmt(m['q_bias'])}"
                     f" | {m['pairs']} ({m['pairs_truncated']}) |")
    lines += ["", "| task | dimension | log-lik (nats) | log-density (nats/unit) |"
              " MAE argmax | MAE mean | range |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['task']} | {r['dimension']} | {_fmt(r['log_lik'])} |"
              f" {_fmt(r['log_density'])} | {r['mae_argmax']:.4g} | {r['mae_mean']:.4g} |"
              f" [{r['low']:g}, {r['high']:g}] |" for r in rows]
    atomic_write_text(out / "offline.md", "\n".join(lines) + "\n")
    atomic_write_text(out / "metrics.json", json.dumps(_json(metrics), indent=2))
    atomic_write_text(out / "offline.csv", pd.DataFrame(rows).to_csv(index=False))
    atomic_write_text(out / "pairs.csv", pd.DataFrame(pairs).to_csv(index=False))
    cal_rows = [{"task": t, **r} for t, rs in calib.items() for r in rs]
    atomic_write_text(out / "calibration.csv",
                      pd.DataFrame(cal_rows, columns=["task", "q_mean", "return_mean", "count"])
                      .to_csv(index=False))
    fig = offline_calibration(calib)
    atomic_write(out / "calibration.png", lambda fh: fig.savefig(fh, format="png", dpi=100))
    import matplotlib.pyplot as plt

    plt.close(fig)
