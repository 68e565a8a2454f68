"""Sampler throughput (trajectories/s) with DataLoader workers, and peak RSS, on 10M transitions.

    python benchmarks/bench_sampler.py [--transitions 10000000] [--root /tmp/pac_bench_store]

Builds (once) a synthetic store with the default mixture's groups and tasks through the store API,
then, in a fresh process per setting, samples batches of params' train.global_batch trajectories
of length data.trajectory_length and reports trajectories/s and the peak resident memory of the
sampling process plus its workers. Results go into BENCHMARKS.md by hand.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

EPISODE_STEPS = 1000


def build(root: Path, transitions: int) -> None:
    """Write `transitions` random steps for the default groups (about a third each)."""
    from pac.config import load_config
    from pac.data.store import Episode, EpisodeStore
    from pac.tasks import TASKS

    if (root / "episodes").is_dir() and EpisodeStore(root / "episodes").num_transitions() \
            >= transitions:
        return
    cfg = load_config()
    store = EpisodeStore(root / "episodes")
    rng = np.random.default_rng(0)
    pairs = [(g, t) for g in cfg.data.groups for t in g.tasks]
    per_pair = -(-transitions // (len(pairs) * EPISODE_STEPS))  # ceil: at least `transitions`
    t0 = time.perf_counter()
    for g, task in pairs:
        spec = TASKS[task]
        for first in range(0, per_pair, 200):  # 200 episodes (200k steps) per append
            n = min(200, per_pair - first)
            steps = n * EPISODE_STEPS
            proprio = rng.normal(size=(steps, spec.num_proprio)).astype(np.float32)
            actions = rng.uniform(-1, 1, (steps, spec.num_actions)).astype(np.float32)
            rewards = rng.uniform(0, 1, steps).astype(np.float32)
            eps = [
                Episode(task, proprio[i * EPISODE_STEPS:(i + 1) * EPISODE_STEPS],
                        actions[i * EPISODE_STEPS:(i + 1) * EPISODE_STEPS],
                        rewards[i * EPISODE_STEPS:(i + 1) * EPISODE_STEPS],
                        np.ones(EPISODE_STEPS, np.float32), success=bool(rng.random() < g.quality),
                        quality=g.quality)
                for i in range(n)
            ]
            store.append_episodes(g.name, eps)
    print(f"built {store.num_transitions():,} transitions in {len(store.shards)} shards"
          f" ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)


def sample(root: Path, workers: int, seconds: float) -> dict:
    """Run the DataLoader for `seconds` (after a warm-up) and measure throughput and RSS."""
    from pac.config import load_config
    from pac.data.sampler import TrajectorySampler, make_dataloader
    from pac.data.store import EpisodeStore
    from pac.data.tokenizer import TaskTokenizer

    cfg = load_config()
    t0 = time.perf_counter()
    store = EpisodeStore(root / "episodes")
    tok = TaskTokenizer.train(root / "spm.model", cfg.data.tokenizer_vocab)
    sampler = TrajectorySampler(cfg, store, tok, seed=0)
    open_s = time.perf_counter() - t0
    kib_opened = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # imports + open store
    batch = cfg.train.global_batch
    loader = iter(make_dataloader(sampler, batch, num_workers=workers))
    for _ in range(20):  # warm-up: workers started, page cache warm
        next(loader)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        b = next(loader)
        n += b.batch_size
    elapsed = time.perf_counter() - t0
    del loader
    kib_self = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kib_children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {
        "workers": workers,
        "transitions": store.num_transitions(),
        "shards": len(store.shards),
        "open_s": round(open_s, 2),
        "batch": batch,
        "trajectory_length": cfg.data.trajectory_length,
        "trajectories_per_s": round(n / elapsed),
        "batches_per_s": round(n / elapsed / batch, 1),
        "rss_mib_after_open": round(kib_opened / 1024),
        "peak_rss_mib_main": round(kib_self / 1024),
        "peak_rss_mib_largest_worker": round(kib_children / 1024),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--transitions", type=int, default=10_000_000)
    parser.add_argument("--root", type=Path, default=Path("/tmp/pac_bench_store"))
    parser.add_argument("--workers", type=int, nargs="*", default=[0, 1, 2])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(sample(args.root, args.child, args.seconds)))
        return
    build(args.root, args.transitions)
    for w in args.workers:  # a fresh process per setting: clean peak-RSS counters
        out = subprocess.run(
            [sys.executable, __file__, "--root", str(args.root), "--seconds", str(args.seconds),
             "--child", str(w)], capture_output=True, text=True, check=True,
        )
        print(out.stdout.strip().splitlines()[-1], flush=True)


if __name__ == "__main__":
    main()
