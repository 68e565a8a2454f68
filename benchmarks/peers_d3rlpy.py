"""Public offline-RL peers for the laptop Table 1: d3rlpy 2.8.1's TD3+BC and IQL on the same data.

``benchmarks/bench_offline.py`` trains PAC and BC arms on one low-quality dataset (an
:class:`~pac.data.store.EpisodeStore` under ``<out>/data``). This script trains two public
offline-RL algorithms on exactly the same transitions and scores them with the project's own
evaluation protocol, so their rows sit in the same table:

* ``td3_plus_bc``: TD3+BC (Fujimoto & Gu, 2021) with d3rlpy's documented defaults: alpha = 2.5,
  observations standardised with the dataset's mean and std (as in the paper), batch 256,
  learning rates 3e-4, target noise 0.2 clipped at 0.5, actor updated every 2nd step;
* ``iql``: IQL (Kostrikov et al., 2022) as d3rlpy's reproduction script configures it:
  expectile 0.7, inverse temperature beta (``weight_temp``) 3.0, advantage weights clipped at 100,
  rewards scaled by 1000 / (max return - min return) of the dataset, the actor's learning rate
  cosine-annealed over the run.

**One task per agent.** Tasks differ in their proprio and action widths, and TD3+BC / IQL are
single-task algorithms, so every task of ``--tasks`` gets its own agent, trained for ``--updates``
updates on every episode of that task in the store (no one-hot task id, no padding). The rows
pool the tasks' evaluation episodes exactly as a multi-task PAC evaluation does; ``train_s`` is
the sum over the tasks' agents. (PAC trains one model on all tasks for ``--updates`` updates, so
with several tasks each peer sees ``len(tasks)`` times more updates in all.)

**Transitions.** Proprio observations are the store's flat per-task vectors. How an episode ends
comes from the store: a terminated episode (last discount 0) marks its last step terminal (TD
target r, nothing to bootstrap from); a truncated episode with a known final observation o_L gets
o_L appended as one extra row marked as a timeout, so its last transition bootstraps from o_L
(d3rlpy never uses a timeout row's action or reward as a transition); a truncated episode without
o_L loses its last step, which has no next observation. d3rlpy has no per-step discount, so any
discount other than 1 before the last step is rejected.

**Evaluation.** The tasks, episode seeds (``pac.evaluation.episode_seed`` of ``eval.seed``), number
of episodes, environments (``episode_env``), episode driver
(``pac.evaluation.rollout.run_episode``),
scripted-expert and random references (``reference_returns``) and statistics
(``summarise_results``: % of expert with standard-error 95% CIs, success with Wilson intervals)
are the ones ``pac.evaluation.evaluate`` uses; only the policy differs (d3rlpy's greedy action).

d3rlpy is not in the project's pinned set: it lives in the benchmark's own folder,

    bash benchmarks/peers_env.sh
    PYTHONPATH=benchmarks/.peers:$PWD .venv/bin/python benchmarks/peers_d3rlpy.py \\
        --data runs/bench_offline/data --tasks point_mass.easy reacher.easy \\
        --algos td3_plus_bc iql --updates 20000 --seeds 3 --eval-episodes 30 \\
        --out runs/bench_offline/peers
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

D3RLPY_VERSION = "2.8.1"
ALGOS = ("td3_plus_bc", "iql")


class PeersUnavailable(ImportError):
    """d3rlpy (the peers' own environment) is not importable."""


# --- the dataset: store episodes -> d3rlpy's flat arrays ------------------------------------------


@dataclass
class PeerDataset:
    """One task's episodes as d3rlpy's MDPDataset arrays (rows = steps, plus o_L rows)."""

    task: str
    observations: np.ndarray  # [R, N^P_task] float32
    actions: np.ndarray  # [R, N^A_task] float32 (zeros on o_L rows: never a transition's action)
    rewards: np.ndarray  # [R] float32 (0 on o_L rows)
    terminals: np.ndarray  # [R] float32: 1 on the last step of a terminated episode
    timeouts: np.ndarray  # [R] float32: 1 on the last row of a truncated episode
    episodes: int  # store episodes that contribute at least one transition
    transitions: int  # what d3rlpy samples from: store steps minus dropped last steps
    dropped: int  # truncated episodes' last steps with no known o_L


def task_dataset(store: Any, task: str) -> PeerDataset:
    """Every episode of `task` in `store` (an EpisodeStore), in store order, as d3rlpy arrays."""
    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("obs", "act", "rew", "term", "tout")}
    episodes = transitions = dropped = 0
    shards = [s for s in store.shards if s.task == task]
    if not shards:
        raise ValueError(f"the store {store.root} has no episodes of task {task!r}")
    for shard in shards:
        for i, row in enumerate(shard.index.itertuples(index=False)):
            start, length = int(row.start), int(row.length)
            where = f"{shard.key} episode {row.episode}"
            disc = np.asarray(shard.discounts[start:start + length], dtype=np.float64)
            if np.any(disc[:-1] != 1.0) or disc[-1] not in (0.0, 1.0):
                raise ValueError(f"{where}: discounts must be 1 before the last step and 0 or 1"
                                 " on it (d3rlpy has no per-step discount)")
            obs = np.asarray(shard.proprio[start:start + length], dtype=np.float32)
            act = np.asarray(shard.actions[start:start + length], dtype=np.float32)
            rew = np.asarray(shard.rewards[start:start + length], dtype=np.float32)
            term = np.zeros(length, np.float32)
            tout = np.zeros(length, np.float32)
            if disc[-1] == 0.0:  # terminated: the last transition has no successor
                term[-1] = 1.0
                transitions += length
            elif bool(row.has_final):  # truncated with o_L: one more row carrying o_L
                obs = np.concatenate([obs, np.asarray(shard.final_proprio[i],
                                                      dtype=np.float32)[None]])
                act = np.concatenate([act, np.zeros((1, act.shape[1]), np.float32)])
                rew = np.concatenate([rew, np.zeros(1, np.float32)])
                term = np.concatenate([term, np.zeros(1, np.float32)])
                tout = np.concatenate([tout, np.ones(1, np.float32)])
                transitions += length
            else:  # truncated, o_L unknown: the last step cannot bootstrap
                tout[-1] = 1.0
                dropped += 1
                transitions += length - 1
                if length == 1:
                    continue  # no transition at all
            episodes += 1
            for key, arr in zip(parts, (obs, act, rew, term, tout)):
                parts[key].append(arr)
    if transitions == 0:
        raise ValueError(f"task {task!r}: the store's episodes hold no transition")
    obs, act, rew, term, tout = (np.concatenate(parts[k]) for k in parts)
    return PeerDataset(task, obs, act, rew, term, tout, episodes, transitions, dropped)


# --- d3rlpy -----------------------------------------------------------------------------------


def import_d3rlpy() -> Any:
    """d3rlpy from the peers' environment, with its info logs silenced; a clear error if absent."""
    try:
        import d3rlpy
    except ImportError as exc:
        raise PeersUnavailable(
            f"d3rlpy {D3RLPY_VERSION} is not importable ({exc}). Build the peers' environment with"
            " `bash benchmarks/peers_env.sh` and run with PYTHONPATH=benchmarks/.peers:$PWD"
        ) from exc
    if d3rlpy.__version__ != D3RLPY_VERSION:
        raise PeersUnavailable(
            f"d3rlpy {d3rlpy.__version__} found, the peers are measured with {D3RLPY_VERSION}:"
            " rebuild benchmarks/.peers with `bash benchmarks/peers_env.sh`"
        )
    import logging

    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    return d3rlpy


def make_algo(d3rlpy: Any, algo: str, updates: int) -> Any:
    """The algorithm with d3rlpy's documented settings (see the module docstring), on the CPU."""
    if algo == "td3_plus_bc":
        config = d3rlpy.algos.TD3PlusBCConfig(
            actor_learning_rate=3e-4, critic_learning_rate=3e-4, batch_size=256,
            target_smoothing_sigma=0.2, target_smoothing_clip=0.5, alpha=2.5,
            update_actor_interval=2,
            observation_scaler=d3rlpy.preprocessing.StandardObservationScaler(),
        )
    elif algo == "iql":
        config = d3rlpy.algos.IQLConfig(
            actor_learning_rate=3e-4, critic_learning_rate=3e-4,
            actor_optim_factory=d3rlpy.optimizers.AdamFactory(
                lr_scheduler_factory=d3rlpy.optimizers.CosineAnnealingLRFactory(T_max=updates)),
            batch_size=256, expectile=0.7, weight_temp=3.0, max_weight=100.0,
            reward_scaler=d3rlpy.preprocessing.ReturnBasedRewardScaler(multiplier=1000.0),
        )
    else:
        raise ValueError(f"unknown peer {algo!r}; known: {', '.join(ALGOS)}")
    return config.create(device=False)


def check_task(task: str) -> None:
    """A known task whose actions lie in [-1, 1], the range both peers' policies squash to."""
    from pac.tasks import TASKS

    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; known tasks: {', '.join(sorted(TASKS))}")
    spec = TASKS[task]
    if set(spec.action_low) != {-1.0} or set(spec.action_high) != {1.0}:
        raise ValueError(f"{task}: actions in [{spec.action_low}, {spec.action_high}],"
                         " the peers assume [-1, 1]")


def train_peer(d3rlpy: Any, algo: str, data: PeerDataset, updates: int, seed: int) -> Any:
    """`updates` gradient updates of `algo` on `data`, seeded by `seed`; returns the agent."""
    check_task(data.task)
    d3rlpy.seed(seed)
    dataset = d3rlpy.dataset.MDPDataset(
        observations=data.observations, actions=data.actions, rewards=data.rewards,
        terminals=data.terminals, timeouts=data.timeouts,
        action_space=d3rlpy.constants.ActionSpace.CONTINUOUS,
    )
    agent = make_algo(d3rlpy, algo, updates)
    agent.fit(dataset, n_steps=updates, n_steps_per_epoch=math.gcd(updates, 1000),
              logger_adapter=d3rlpy.logging.NoopAdapterFactory(), show_progress=False,
              save_interval=updates + 1)
    return agent


# --- evaluation: the evaluation room's protocol with a d3rlpy policy ------------------------------


def evaluate_agents(
    cfg: Any, agents: dict[str, Any], cache: Path, recorded: dict[str, int] | None = None
) -> list[dict[str, Any]]:
    """Rows of pac.evaluation's table, one agent per task (same seeds, references, statistics,
    and horizon: `recorded`, the training store's episode length per task, as for PAC)."""
    from pac.envs import flatten_observation
    from pac.evaluation.evaluator import (
        Runner,
        episode_env,
        episode_seed,
        eval_horizons,
        reference_returns,
    )
    from pac.evaluation.rollout import run_episode
    from pac.evaluation.tables import summarise_results

    e = cfg.eval
    tasks = list(agents)
    horizons = {t: n for t, (n, _) in eval_horizons(cfg, tasks, recorded).items()}
    results = []
    for task, agent in agents.items():
        def policy(env: Any, time_step: Any, agent: Any = agent) -> np.ndarray:
            return agent.predict(flatten_observation(time_step.observation)[None])[0]

        steps = horizons[task]
        for i in range(e.episodes_per_task):
            seed = episode_seed(e.seed, task, i)
            ep = run_episode(episode_env(task, seed, steps), policy, task, steps)
            results.append({"task": task, "episode": i, "seed": seed, "return": ep.total_return,
                            "success": ep.success, "steps": ep.length, "horizon": steps})
    with Runner(1) as run:
        refs = reference_returns(tasks, e.episodes_per_task, horizons, e.seed, run, cache,
                                 e.expert_returns)
    return summarise_results(results, refs, e.held_out_tasks)


def peer_row(
    cfg: Any, data_root: str | Path, tasks: list[str], algo: str, seed: int, updates: int,
    out_dir: str | Path,
) -> dict[str, Any]:
    """Train `algo` (one agent per task) on the store under `data_root` and evaluate it with
    ``cfg.eval``; returns a bench_offline row (arm, seed, train_s, eval_s, the "all" row) and
    writes ``out_dir/results.md`` (pac.evaluation's table layout) and ``out_dir/row.json``."""
    import torch

    from pac.data import EpisodeStore, store_root, task_horizons
    from pac.evaluation.tables import markdown_table
    from pac.io import atomic_write_text

    if algo not in ALGOS:
        raise ValueError(f"unknown peer {algo!r}; known: {', '.join(ALGOS)}")
    for task in tasks:
        check_task(task)
    store = EpisodeStore(store_root(data_root))
    datasets = [task_dataset(store, t) for t in tasks]  # validated before any training
    d3rlpy = import_d3rlpy()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # arms are measured one after another on one core each
    try:
        agents, train_s = {}, 0.0
        for data in datasets:
            start = time.perf_counter()
            agents[data.task] = train_peer(d3rlpy, algo, data, updates, seed)
            train_s += time.perf_counter() - start
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        rows = evaluate_agents(cfg, agents, out / "references.json", task_horizons(store))
        eval_s = time.perf_counter() - start
    finally:
        torch.set_num_threads(threads)
    header = (f"## {algo} (d3rlpy {D3RLPY_VERSION}), seed {seed}, {updates} updates per task"
              f" ({cfg.eval.episodes_per_task} episodes per task, seed={cfg.eval.seed})")
    atomic_write_text(out / "results.md", markdown_table(rows, header))
    overall = next(r for r in rows if r["level"] == "all")
    row = {"arm": algo, "seed": seed, "train_s": round(train_s, 1), "eval_s": round(eval_s, 1),
           **overall, "updates": updates,
           "updates_per_s": round(updates * len(tasks) / train_s, 1),
           "transitions": sum(d.transitions for d in datasets), "store": store.fingerprint()}
    atomic_write_text(out / "row.json", json.dumps(row, indent=1, default=float))
    return row


# --- the command line -----------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, required=True,
                    help="bench_offline's data root (<out>/data: the store is <data>/episodes)")
    ap.add_argument("--tasks", nargs="+", default=["point_mass.easy", "reacher.easy"])
    ap.add_argument("--algos", nargs="+", default=list(ALGOS), choices=ALGOS)
    ap.add_argument("--updates", type=int, default=2000, help="gradient updates per task agent")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--eval-episodes", type=int, default=30, help="per task and seed")
    ap.add_argument("--episode-steps", type=int, default=100,
                    help="evaluation episode length (bench_offline's --episode-steps)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="extra params, as given to bench_offline (e.g. eval.seed=1000)")
    ap.add_argument("--out", type=Path, required=True, help="folder for results.json and runs")
    args = ap.parse_args()
    if args.updates < 1 or args.seeds < 1 or args.eval_episodes < 1:
        ap.error("--updates, --seeds and --eval-episodes must be >= 1")

    from pac.config import load_config
    from pac.data import store_root
    from pac.io import atomic_write_text

    if not store_root(args.data).is_dir():
        ap.error(f"{store_root(args.data)} is not an episode store (run bench_offline first)")
    cfg = load_config(overrides=[f"data.episode_steps={args.episode_steps}",
                                 f"eval.episodes_per_task={args.eval_episodes}", *args.set])
    try:
        import_d3rlpy()
    except PeersUnavailable as exc:
        raise SystemExit(str(exc)) from exc
    out = args.out.resolve()
    results = []
    for algo in args.algos:
        for seed in range(args.seeds):
            row = peer_row(cfg, args.data, args.tasks, algo, seed, args.updates,
                           out / "runs" / f"{algo}-seed{seed}")
            results.append(row)
            print(f"{algo:12s} seed {seed}: {row['pct_expert']:6.1f}% of expert"
                  f" [{row['pct_expert_low']:.1f}, {row['pct_expert_high']:.1f}],"
                  f" success {row['success_rate']:.1f}% [{row['success_low']:.1f},"
                  f" {row['success_high']:.1f}], train {row['train_s']:.0f} s"
                  f" ({row['updates_per_s']:.0f} updates/s)", flush=True)
    atomic_write_text(out / "results.json", json.dumps(results, indent=1, default=float))
    print("\n| arm | seeds | % of expert (mean over seeds) | success % | train s / seed"
          " | updates/s |")
    print("|---|---:|---:|---:|---:|---:|")
    for algo in args.algos:
        rows = [r for r in results if r["arm"] == algo]
        mean = {k: sum(r[k] for r in rows) / len(rows)
                for k in ("pct_expert", "success_rate", "train_s", "updates_per_s")}
        print(f"| {algo} | {len(rows)} | {mean['pct_expert']:.1f} | {mean['success_rate']:.1f}"
              f" | {mean['train_s']:.0f} | {mean['updates_per_s']:.0f} |")


if __name__ == "__main__":
    main()
