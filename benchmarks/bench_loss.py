"""Where one PAC update goes: section times of `compute_loss` + backward + AdamW, one thread.

    python benchmarks/bench_loss.py [--sizes small tiny] [--updates 20 6] [--repeats 3]
                                    [--against DIR]

For each model size, `loss.variant=pac` at batch 32 x trajectory length 5 and N = 10 sampled
actions (params/default.yaml's loss), random weights and a random batch
(`pac.model.examples.random_batch`): the online encoder, policy and Q decoders, the target
network's encoder, policy, sampling and N-sample Q decoder (timed by wrapping the modules'
methods), the whole loss forward, the backward and the optimiser step, averaged over `--updates`
updates after two warm-up updates. Sizes: ``small`` = `model.d_z=64 model.num_blocks=2
model.num_latents=16 model.widening=1`, ``tiny`` = params/default.yaml's model.

`--against DIR` runs the same measurement with the `pac` package of another checkout (DIR, e.g.
a `git worktree` of an earlier commit) alternating with this one, `--repeats` times, so a
before/after comparison shares the machine's load. Results go into BENCHMARKS.md by hand.
"""

from __future__ import annotations

import argparse
import collections
import copy
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

SIZES = {
    "small": ["model.d_z=64", "model.num_blocks=2", "model.num_latents=16", "model.widening=1"],
    "tiny": [],
}
ROOT = Path(__file__).resolve().parents[1]


def measure(size: str, updates: int) -> dict[str, float]:
    """Milliseconds per update of each section, and updates/s, for model `size` (this process's
    `pac`)."""
    import torch

    import pac.losses as losses
    from pac.config import load_config
    from pac.model import PerceiverActorCritic
    from pac.model.examples import random_batch

    torch.set_num_threads(1)
    cfg = load_config(ROOT / "params" / "default.yaml", SIZES[size] + ["loss.variant=pac"])
    torch.manual_seed(0)
    model = PerceiverActorCritic(cfg.model)
    target = copy.deepcopy(model).requires_grad_(False).eval()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    batch = random_batch(cfg.model, 32, cfg.data.trajectory_length, seed=1)
    generator = torch.Generator().manual_seed(0)
    times: dict[str, float] = collections.defaultdict(float)

    def timed(owner: Any, name: str, label: str) -> None:
        inner = getattr(owner, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            result = inner(*args, **kwargs)
            times[label] += time.perf_counter() - start
            return result

        setattr(owner, name, call)

    for net, tag in ((model, "online"), (target, "target")):
        timed(net, "encode", f"{tag} encode")
        timed(net, "policy_logits", f"{tag} policy decoder")
        timed(net, "q_logits", f"{tag} Q decoder")
    timed(losses, "sample", "target sampling")

    def run(n: int) -> None:
        for _ in range(n):
            t0 = time.perf_counter()
            out = losses.compute_loss(model, target, batch, cfg.loss, 0, generator)
            t1 = time.perf_counter()
            optimizer.zero_grad()
            out.total.backward()
            t2 = time.perf_counter()
            optimizer.step()
            t3 = time.perf_counter()
            times["loss forward"] += t1 - t0
            times["backward"] += t2 - t1
            times["optimizer"] += t3 - t2
            times["update"] += t3 - t0

    run(2)
    times.clear()
    run(updates)
    result = {k: 1000 * v / updates for k, v in times.items()}
    result["updates/s"] = updates / times["update"]
    return result


def in_checkout(checkout: Path, size: str, updates: int) -> dict[str, float]:
    """:func:`measure` in a subprocess that imports `pac` from `checkout`."""
    env = os.environ | {"PYTHONPATH": str(checkout), "OMP_NUM_THREADS": "1"}
    code = (f"import json, sys; sys.path.insert(0, {str(Path(__file__).parent)!r});"
            f" import bench_loss; print(json.dumps(bench_loss.measure({size!r}, {updates})))")
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=checkout, check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    parser.add_argument("--updates", nargs="+", type=int, default=[20, 6],
                        help="timed updates per size (one value, or one per size)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--against", type=Path, default=None,
                        help="another checkout whose pac to alternate with this one")
    args = parser.parse_args()
    updates = dict(zip(args.sizes, args.updates * len(args.sizes)
                       if len(args.updates) == 1 else args.updates, strict=True))
    sides = {"this": ROOT} | ({"against": args.against.resolve()} if args.against else {})
    results: dict[tuple[str, str], list[dict[str, float]]] = collections.defaultdict(list)
    for repeat in range(args.repeats):
        for size in args.sizes:
            for side, checkout in sides.items():
                r = in_checkout(checkout, size, updates[size])
                results[(size, side)].append(r)
                print(f"[{repeat + 1}] {size:5s} {side:7s} {r['updates/s']:6.2f} updates/s  "
                      + "  ".join(f"{k} {v:.1f}" for k, v in r.items() if k != "updates/s"),
                      flush=True)
    for (size, side), runs in results.items():
        rates = [r["updates/s"] for r in runs]
        print(f"{size} {side}: updates/s {' / '.join(f'{x:.2f}' for x in rates)}"
              f" (mean {sum(rates) / len(rates):.2f})")


if __name__ == "__main__":
    main()
