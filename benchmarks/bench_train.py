"""Training throughput (samples/s) and model-FLOPs utilisation of `pac.train.train` on this machine.

    python benchmarks/bench_train.py [--updates 12] [--xs-updates 4] [--root /tmp/pac_bench_train]

Generates (once) a small real dm_control dataset, then runs the real trainer (DeepSpeed engine,
MLflow tracking, checkpoint and export included) for

* tiny: params/default.yaml as it is (global batch 32 trajectories of 5 steps), ZeRO-0 and ZeRO-3;
* XS: params/presets/XS.yaml (73M, Table 5 input format: 2,634 input tokens per step), a global
  batch of 4 trajectories of 5 steps, ZeRO-0, fp32 on CPU.

samples/s = trajectories per second of the last logging window (after warm-up); MFU = App. E.2
FLOPs per update (B x T time steps) x updates/s / the fp32 matmul peak measured here, by the same
process, just before. Results go into BENCHMARKS.md by hand.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path

DATA = [
    "data.episode_steps=50",
    "data.render=false",
    "data.groups=[{name: expert, tasks: [point_mass.easy, cartpole.balance, reacher.easy],"
    " quality: 1.0, episodes_per_task: 6}, {name: noisy, tasks: [point_mass.easy],"
    " quality: 0.3, episodes_per_task: 6}]",
]


def make_data(root: Path) -> None:
    from pac.config import load_config
    from pac.data import TaskTokenizer, store_root, tokenizer_path
    from pac.data.generate import generate_group

    if (root / "tokenizer" / "spm.model").is_file():
        return
    cfg = load_config(overrides=DATA)
    for g in cfg.data.groups:
        generate_group(cfg, g.name, store_root(root), workers=1, progress=False)
    TaskTokenizer.train(tokenizer_path(root), cfg.data.tokenizer_vocab, cfg.data.tokenizer_type)


def peak_flops() -> float:
    """Best fp32 matmul throughput over a few square sizes (FLOP/s)."""
    from pac.train.plan import measure_matmul_peak

    return max(measure_matmul_peak("cpu", n, seconds=1.0) for n in (512, 1024, 2048))


def run(name: str, params: str | None, overrides: list[str], root: Path, peak: float) -> dict:
    from pac.config import load_config
    from pac.train import train
    from pac.train.plan import parameter_counts, training_flops_per_update

    out = root / "runs" / name
    shutil.rmtree(out, ignore_errors=True)
    cfg = load_config(params, [
        *DATA, *overrides,
        f"train.out_dir={out}",
        f"tracking.uri=sqlite:///{root / 'mlruns' / 'mlflow.db'}",
        f"tracking.artifact_dir={root / 'mlruns' / 'artifacts'}",
    ])
    cpu0 = time.process_time()
    result = train(cfg, data_root=root / "data")
    cpu = time.process_time() - cpu0
    last = result.history[-1]
    flops = training_flops_per_update(cfg)
    row = {
        "run": name,
        "params": parameter_counts(cfg.model)[0],
        "zero": cfg.train.zero_stage,
        "batch": f"{cfg.train.global_batch}x{cfg.data.trajectory_length}",
        "updates_per_s": last["steps_per_s"],
        "samples_per_s": last["samples_per_s"],
        "transitions_per_s": last["samples_per_s"] * cfg.data.trajectory_length,
        "gflop_per_update": flops / 1e9,
        "mfu": flops * last["steps_per_s"] / peak,
        "process_cpu_s": cpu,
    }
    shutil.rmtree(out, ignore_errors=True)  # checkpoints of XS are ~1 GB
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--updates", type=int, default=12, help="updates per logging window")
    parser.add_argument("--xs-updates", type=int, default=3)
    parser.add_argument("--root", type=Path, default=Path("/tmp/pac_bench_train"))
    args = parser.parse_args()
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    make_data(args.root / "data")
    peak = peak_flops()
    print(f"fp32 matmul peak: {peak / 1e9:.1f} GFLOP/s; load average {os.getloadavg()}")

    def window(n: int) -> list[str]:  # two logging windows: warm-up, then the measured one
        return [f"train.steps={2 * n}", f"train.log_every={n}", f"train.checkpoint_every={2 * n}"]

    rows = [
        run("tiny-zero0", None, window(args.updates), args.root, peak),
        run("tiny-zero3", None, [*window(args.updates), "train.zero_stage=3"], args.root, peak),
        run("XS-zero0", "params/presets/XS.yaml",
            [*window(args.xs_updates), "train.global_batch=4", "train.zero_stage=0",
             "train.precision=fp32", "train.backend=gloo", "train.launcher=local"],
            args.root, peak),
    ]
    print(f"fp32 matmul peak after: {peak_flops() / 1e9:.1f} GFLOP/s;"
          f" load average {os.getloadavg()}")
    print("| run | params | ZeRO | batch (B x T) | updates/s | samples/s | transitions/s"
          " | GFLOP/update (E.2) | MFU |")
    print("|---|---:|---:|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['run']} | {r['params'] / 1e6:.1f}M | {r['zero']} | {r['batch']} |"
              f" {r['updates_per_s']:.2f} | {r['samples_per_s']:.1f} |"
              f" {r['transitions_per_s']:.1f} | {r['gflop_per_update']:.1f} |"
              f" {100 * r['mfu']:.1f}% |")
    print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
