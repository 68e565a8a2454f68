"""Does the critic prefer the expert? Probe a PAC checkpoint's Q on dataset-like states.

The graded behaviour policy of data generation (``pac.envs.behaviour_action`` at ``--quality``,
default 0.42, and ``--suboptimal``: the low-quality data of the laptop Table 1) is rolled out
for ``--episodes`` episodes per task on fixed seeds. At every visited state the scripted expert's
action a_e and the behaviour (data) action a_b are computed and the checkpoint's Q is queried for
both, plus for N = ``--samples`` (10) actions drawn from the policy, all in one encoder pass through
:meth:`pac.evaluation.rollout.PolicyServer.q_values` (the Q decoding of ``q_rerank``). States
where the two actions nearly coincide (|a_e - a_b|_inf < ``--min-gap``, 0.05) are skipped and
counted. Per task it reports:

* the fraction of states with Q(s, a_e) > Q(s, a_b), with a Wilson 95% interval;
* the mean of Q(s, a_e) - Q(s, a_b);
* the spread (max - min) of Q over the N policy samples, the eq. 11 weights softmax(Q / eta) at
  the checkpoint's ``loss.eta``: their effective sample size 1 / sum w^2 (N = uniform) and
  entropy (ln N = uniform), averaged over the probed states;
* does Q know the *direction* of a good action: the fraction of states with Q(s, a_e) above Q
  of the expert's action mirrored through the centre of the action box (low + high - a_e: the
  same magnitude, the opposite way);
* where Q itself would send the policy (tasks with N^A <= 3): over a grid of ``GRID_POINTS``
  values per action dimension, how often Q's best grid action lies on the box's boundary, and
  the cosine between it and a_e (both taken from the box's centre). A critic that extrapolates
  to the largest actions it never saw at these states puts its best action on the boundary
  whatever the direction: the corner an alpha = 0 policy then collapses to.

A markdown table goes to stdout, every number (and per-state values) to ``--out`` (JSON). One
thread; a few hundred states per task take seconds.

    python benchmarks/probe_critic.py --checkpoint /tmp/EA/train/policy --episodes 5 \\
        --out /tmp/probe_critic.json

**Calibration** (tasks without a scripted expert, data from outside): with ``--rollouts DIR``
(rollout files no arm trained on) and / or ``--on-policy E`` (E episodes of the checkpoint's own
argmax policy per task, seeds ``--seed`` + e + 50,000, over the checkpoint's horizon), Q(s_t, a_t)
of the episode's own action at every ``--stride``-th step is set against the Monte-Carlo
discounted return G_t = sum_k gamma^k r_(t+k) at the checkpoint's ``loss.gamma`` (steps closer
to the episode's end than ln 0.05 / ln gamma, at most half the episode, are left out: there the
truncated sum misses more than 5 % of the tail): mean Q and G, bias, Pearson and Spearman
correlation, slope of Q on G, Q's spread and the weights' ESS over N policy samples, and how
often Q ranks the episode's action above the mean Q of the policy's samples (which way eq. 11
pushes against those actions). On the policy's own episodes G_t is the quantity Q estimates;
on another policy's episodes Q (of the target policy after a_t) and G (of that policy) differ
by the two policies' gap.

    python benchmarks/probe_critic.py --checkpoint runs/heldout/sac_arms/runs/pac-seed0/policy \\
        --tasks cartpole.swingup --rollouts runs/heldout/sac_replay/heldout --on-policy 3
"""

from __future__ import annotations

import argparse
import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pac.evaluation.rollout import PolicyServer
from pac.evaluation.stats import wilson_interval
from pac.losses import improvement_weights
from pac.tasks import SUBOPTIMAL

DEFAULT_TASKS = ("point_mass.easy", "cartpole.balance", "reacher.easy")
GRID_POINTS = 5  # per action dimension: low, the quarter points, high
MAX_GRID_ACTIONS = 3  # a grid over more action dimensions is not probed (5^N actions)


def action_grid(low: np.ndarray, high: np.ndarray, num_actions: int) -> np.ndarray:
    """[GRID_POINTS ** N^A, N^A] every combination of GRID_POINTS evenly spaced values of each
    dimension's range (`low`, `high`: per dimension, or one number for all)."""
    low, high = np.broadcast_to(low, num_actions), np.broadcast_to(high, num_actions)
    axes = [np.linspace(lo, hi, GRID_POINTS, dtype=np.float32) for lo, hi in zip(low, high)]
    mesh = np.meshgrid(*axes, indexing="ij")
    return np.stack([m.reshape(-1) for m in mesh], axis=-1)


def _cosine(u: np.ndarray, v: np.ndarray) -> float:
    norm = float(np.linalg.norm(u) * np.linalg.norm(v))
    return float(u @ v) / norm if norm > 0 else math.nan


def probe_task(
    server: PolicyServer,
    task: str,
    quality: float,
    episodes: int,
    seed: int,
    steps: int,
    samples: int = 10,
    min_gap: float = 0.05,
    suboptimal: str = "random",
) -> dict[str, Any]:
    """Roll out the behaviour policy on `task` and compare Q of expert vs. data actions."""
    from pac.envs import behaviour_action, expert_action, make_env, task_spec

    eta = float(server.cfg.loss.eta)
    spec = task_spec(task)
    low, high = spec.low, spec.high  # per dimension
    centre = 0.5 * (low + high)
    grid = (action_grid(low, high, spec.num_actions) if spec.num_actions <= MAX_GRID_ACTIONS
            else np.zeros((0, spec.num_actions), np.float32))
    generator = torch.Generator().manual_seed(seed)
    states: list[dict[str, Any]] = []
    visited = skipped = 0
    for episode in range(episodes):
        env_seed = seed + episode
        env = make_env(task, env_seed, steps)
        rng = np.random.default_rng(env_seed)
        time_step, t = env.reset(), 0
        while not time_step.last():
            a_e = expert_action(task, env)
            a_b = behaviour_action(task, env, quality, rng, suboptimal)
            visited += 1
            if float(np.max(np.abs(a_e - a_b))) < min_gap:
                skipped += 1
            else:
                mirrored = (low + high - a_e).astype(np.float32)
                q_given, q_pi = server.q_values(
                    time_step.observation, task, np.concatenate([np.stack([a_e, a_b, mirrored]),
                                                                 grid]), samples,
                    generator=generator,
                )
                w = improvement_weights(torch.from_numpy(q_pi), eta).double().numpy()
                grid_stats = {}
                if len(grid):
                    q_grid = q_given[3:]
                    best = grid[int(np.argmax(q_grid))]
                    grid_stats = {
                        "grid_best": [float(v) for v in best],
                        "grid_best_on_boundary": bool(np.any((best <= low) | (best >= high))),
                        "grid_cosine": _cosine(best - centre, a_e - centre),
                        "grid_range": float(q_grid.max() - q_grid.min()),
                    }
                states.append({
                    "episode": episode,
                    "t": t,
                    "proprio": [float(v) for v in _flat(time_step.observation)],
                    "a_expert": [float(v) for v in a_e],
                    "a_data": [float(v) for v in a_b],
                    "q_expert": float(q_given[0]),
                    "q_data": float(q_given[1]),
                    "q_mirrored": float(q_given[2]),
                    "q_spread": float(q_pi.max() - q_pi.min()),
                    "ess": float(1.0 / np.sum(w * w)),
                    "weight_entropy": float(-np.sum(w * np.log(np.clip(w, 1e-300, None)))),
                    **grid_stats,
                })
            time_step, t = env.step(a_b), t + 1
    return summarise_task(task, states, visited, skipped, samples)


def _flat(observation: Any) -> np.ndarray:
    from pac.envs import flatten_observation

    return flatten_observation(observation)


def summarise_task(
    task: str, states: list[dict[str, Any]], visited: int, skipped: int, samples: int
) -> dict[str, Any]:
    """The per-task row: counts, fraction expert > data with its Wilson interval, Q statistics."""
    n = len(states)
    wins = sum(s["q_expert"] > s["q_data"] for s in states)
    low, high = wilson_interval(wins, n) if n else (math.nan, math.nan)

    def mean(key: str) -> float:
        values = [float(s[key]) for s in states if key in s and not math.isnan(float(s[key]))]
        return float(np.mean(values)) if values else math.nan

    return {
        "task": task,
        "visited": visited,
        "skipped": skipped,
        "states": n,
        "expert_wins": int(wins),
        "fraction": wins / n if n else math.nan,
        "wilson_low": low,
        "wilson_high": high,
        "mean_q_diff": float(np.mean([s["q_expert"] - s["q_data"] for s in states])) if n
        else math.nan,
        "q_spread": mean("q_spread"),
        "ess": mean("ess"),
        "weight_entropy": mean("weight_entropy"),
        "over_mirrored": float(np.mean([s["q_expert"] > s["q_mirrored"] for s in states])) if n
        else math.nan,
        "mean_mirrored_diff": float(np.mean([s["q_expert"] - s["q_mirrored"] for s in states]))
        if n else math.nan,
        "grid_on_boundary": mean("grid_best_on_boundary"),
        "grid_cosine": mean("grid_cosine"),
        "grid_range": mean("grid_range"),
        "num_samples": samples,
        "per_state": states,
    }


def markdown(rows: list[dict[str, Any]], eta: float) -> str:
    """The per-task table (markdown)."""
    lines = [
        "| task | states (skipped) | Q(s,a_e) > Q(s,a_b) [Wilson 95%] | mean Q(a_e) - Q(a_b) |"
        f" Q spread (N={rows[0]['num_samples'] if rows else 0}) | ESS at eta={eta:g} |"
        " weight entropy | Q(s,a_e) > Q(s,mirrored a_e) | grid best on boundary |"
        " cos(grid best, a_e) |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['task']} | {r['states']} ({r['skipped']}) | {r['fraction']:.3f}"
            f" [{r['wilson_low']:.3f}, {r['wilson_high']:.3f}] | {r['mean_q_diff']:+.4f} |"
            f" {r['q_spread']:.4f} | {r['ess']:.2f} | {r['weight_entropy']:.3f} |"
            f" {r['over_mirrored']:.3f} | {r['grid_on_boundary']:.2f} | {r['grid_cosine']:+.2f} |"
        )
    return "\n".join(lines)


def discounted_returns(rewards: np.ndarray, gamma: float) -> np.ndarray:
    """G_t = r_t + gamma G_(t+1), G_T = 0 (no bootstrap past the episode's last step)."""
    out = np.zeros(len(rewards), np.float64)
    acc = 0.0
    for t in range(len(rewards) - 1, -1, -1):
        acc = float(rewards[t]) + gamma * acc
        out[t] = acc
    return out


def calibrate_episode(
    server: PolicyServer, task: str, proprio: np.ndarray, actions: np.ndarray,
    rewards: np.ndarray, stride: int, samples: int, generator: torch.Generator,
) -> list[dict[str, Any]]:
    """Per probed state of one episode: Q of its action, its Monte-Carlo return, Q over N
    policy samples (spread, ESS of the eq. 11 weights at the checkpoint's eta)."""
    gamma, eta = float(server.cfg.loss.gamma), float(server.cfg.loss.eta)
    length = len(rewards)
    tail = min(math.ceil(math.log(0.05) / math.log(gamma)) if 0 < gamma < 1 else 0,
               length // 2)
    mc = discounted_returns(rewards, gamma)
    states = []
    for t in range(0, length - tail, stride):
        q_given, q_pi = server.q_values(proprio[t], task, actions[t][None], samples,
                                        generator=generator)
        w = improvement_weights(torch.from_numpy(q_pi), eta).double().numpy()
        states.append({"t": t, "q": float(q_given[0]), "mc": float(mc[t]),
                       "q_policy_mean": float(q_pi.mean()),
                       "q_spread": float(q_pi.max() - q_pi.min()),
                       "ess": float(1.0 / np.sum(w * w))})
    return states


def _rank(x: np.ndarray) -> np.ndarray:
    order = np.argsort(x, kind="stable")
    ranks = np.empty(len(x), np.float64)
    ranks[order] = np.arange(len(x))
    return ranks


def summarise_calibration(source: str, task: str, episodes: int,
                          states: list[dict[str, Any]]) -> dict[str, Any]:
    """One calibration row: Q against G over the probed states of `source`."""
    q = np.array([s["q"] for s in states])
    g = np.array([s["mc"] for s in states])
    above = np.array([s["q"] > s["q_policy_mean"] for s in states])
    flat = len(q) < 3 or q.std() == 0 or g.std() == 0
    return {
        "source": source, "task": task, "episodes": episodes, "states": len(q),
        "mean_q": float(q.mean()), "mean_mc": float(g.mean()), "bias": float((q - g).mean()),
        "pearson": math.nan if flat else float(np.corrcoef(q, g)[0, 1]),
        "spearman": math.nan if flat else float(np.corrcoef(_rank(q), _rank(g))[0, 1]),
        "slope": math.nan if flat else float(np.polyfit(g, q, 1)[0]),
        "q_spread": float(np.mean([s["q_spread"] for s in states])),
        "ess": float(np.mean([s["ess"] for s in states])),
        "action_above_policy": float(above.mean()),
        "mean_action_minus_policy": float(np.mean([s["q"] - s["q_policy_mean"]
                                                   for s in states])),
        "per_state": states,
    }


def calibration_markdown(rows: list[dict[str, Any]], gamma: float, samples: int) -> str:
    lines = [f"| source | task | episodes | states | mean Q | mean G (gamma {gamma:g}) | bias |"
             f" Pearson | Spearman | slope | Q spread (N={samples}) | ESS |"
             " Q(a_t) > mean Q(policy samples) |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['source']} | {r['task']} | {r['episodes']} | {r['states']} |"
                     f" {r['mean_q']:.3f} | {r['mean_mc']:.3f} | {r['bias']:+.3f} |"
                     f" {r['pearson']:.3f} | {r['spearman']:.3f} | {r['slope']:.3f} |"
                     f" {r['q_spread']:.4f} | {r['ess']:.2f} | {r['action_above_policy']:.3f} |")
    return "\n".join(lines)


def calibrate(server: PolicyServer, args: argparse.Namespace,
              horizons: dict[str, int]) -> list[dict[str, Any]]:
    """The calibration rows of --rollouts (per task) and --on-policy (per task of --tasks)."""
    from pac.envs import make_env
    from pac.evaluation.rollout import run_episode
    from pac.rlft.ingest import read_rollout

    generator = torch.Generator().manual_seed(args.seed)
    rows = []
    if args.rollouts:
        by_task: dict[str, list[dict[str, Any]]] = {}
        counts: dict[str, int] = {}
        for path in sorted(Path(args.rollouts).glob("*.npz")):
            episode, _ = read_rollout(path)
            by_task.setdefault(episode.task, []).extend(calibrate_episode(
                server, episode.task, episode.proprio, episode.actions, episode.rewards,
                args.stride, args.samples, generator))
            counts[episode.task] = counts.get(episode.task, 0) + 1
        rows += [summarise_calibration("rollouts", t, counts[t], st)
                 for t, st in by_task.items()]
    for task in args.tasks if args.on_policy else []:
        steps = args.steps or horizons.get(task) or server.cfg.data.episode_steps
        states: list[dict[str, Any]] = []
        for e in range(args.on_policy):
            env = make_env(task, args.seed + e + 50_000, steps)
            ep = run_episode(env, server.policy(task, seed=args.seed + e), task)
            states += calibrate_episode(server, task, ep.observations[:-1], ep.actions,
                                        ep.rewards, args.stride, args.samples, generator)
        rows.append(summarise_calibration("own policy", task, args.on_policy, states))
    return rows


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Probe every task; write the JSON atomically; return the report."""
    if not 0.0 <= args.quality <= 1.0:
        raise SystemExit(f"error: --quality must be in [0, 1], got {args.quality}")
    if args.episodes < 1 or args.samples < 1 or args.stride < 1:
        raise SystemExit("error: --episodes, --samples and --stride must be >= 1")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # batch-1 inference; put back below (callers keep their setting)
    try:
        return _run(args)
    finally:
        torch.set_num_threads(threads)


def _run(args: argparse.Namespace) -> dict[str, Any]:
    from pac.checkpoint import load_checkpoint_horizons

    try:
        server = PolicyServer.load(args.checkpoint)
    except (FileNotFoundError, ValueError) as exc:
        raise SystemExit(f"error: {args.checkpoint}: {exc}") from None
    horizons = load_checkpoint_horizons(args.checkpoint)
    if args.rollouts or args.on_policy:
        gamma = float(server.cfg.loss.gamma)
        rows = calibrate(server, args, horizons)
        return _write(args, {"checkpoint": str(args.checkpoint), "seed": args.seed,
                             "gamma": gamma, "eta": float(server.cfg.loss.eta),
                             "calibration": rows,
                             "table": calibration_markdown(rows, gamma, args.samples)})
    rows = []
    for task in args.tasks:
        steps = args.steps or horizons.get(task) or server.cfg.data.episode_steps
        try:
            rows.append(probe_task(server, task, args.quality, args.episodes, args.seed, steps,
                                   args.samples, args.min_gap, args.suboptimal))
        except ValueError as exc:
            raise SystemExit(f"error: {exc}") from None
    eta = float(server.cfg.loss.eta)
    report = {
        "checkpoint": str(args.checkpoint),
        "quality": args.quality,
        "suboptimal": args.suboptimal,
        "episodes": args.episodes,
        "seed": args.seed,
        "eta": eta,
        "min_gap": args.min_gap,
        "tasks": rows,
        "table": markdown(rows, eta),
    }
    return _write(args, report)


def _write(args: argparse.Namespace, report: dict[str, Any]) -> dict[str, Any]:
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_text(json.dumps(report, indent=1))
        os.replace(tmp, out)
    return report


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="How often does a PAC checkpoint's critic rank the scripted expert's action "
        "above the behaviour (data) action on states of the graded behaviour policy?"
    )
    parser.add_argument("--checkpoint", required=True, help="inference checkpoint directory")
    parser.add_argument("--tasks", nargs="+", default=list(DEFAULT_TASKS))
    parser.add_argument("--quality", type=float, default=0.42, help="behaviour quality in [0, 1]")
    parser.add_argument("--suboptimal", default="random", choices=SUBOPTIMAL,
                        help="the behaviour when not the expert (pac.envs.behaviour_action)")
    parser.add_argument("--episodes", type=int, default=5, help="episodes per task")
    parser.add_argument("--seed", type=int, default=0, help="episode e uses seed + e")
    parser.add_argument("--steps", type=int, default=0,
                        help="episode length (0: checkpoint horizons, else data.episode_steps)")
    parser.add_argument("--samples", type=int, default=10, help="N policy samples per state")
    parser.add_argument("--min-gap", type=float, default=0.05,
                        help="skip states with |a_expert - a_data|_inf below this")
    parser.add_argument("--out", default=None, help="JSON report path")
    parser.add_argument("--rollouts", default=None,
                        help="calibration: a folder of rollout files no arm trained on")
    parser.add_argument("--on-policy", type=int, default=0, metavar="E",
                        help="calibration: E episodes of the checkpoint's own policy per task")
    parser.add_argument("--stride", type=int, default=5, help="calibration: every k-th step")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    report = run(parse_args(argv))
    print(f"checkpoint {report['checkpoint']}  quality {report.get('quality', '-')}  "
          f"episodes {report.get('episodes', '-')}  eta {report['eta']:g}")
    print(report["table"])


if __name__ == "__main__":
    main()
