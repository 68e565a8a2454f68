"""Training throughput (samples/s) and model-FLOPs utilisation of `pac.train.train` on this machine.

    python benchmarks/bench_train.py [--updates 12] [--xs-updates 3] [--runs tiny zero3 xs heldout]
    python benchmarks/bench_train.py --parity 200 [--parity-batch 32] [--plot FILE.png]

Generates (once) a small real dm_control dataset, then runs the real trainer (DeepSpeed engine,
MLflow tracking, checkpoint and export included) for

* tiny: params/default.yaml (global batch 32 trajectories of 5 steps), the new defaults
  (`train.precision: auto`, fused CPU AdamW, the D_Z 64 / 2-block tiny scale) alternating twice
  with the old default (the former tiny scale ``OLD_TINY`` on the old fp32 path: fp32, torch's
  per-tensor AdamW loop) and with today's model on the old fp32 path, so both ratios (whole
  default, and precision + optimiser alone) are measured side by side; ZeRO-3 once;
* XS: params/presets/XS.yaml (73M, Table 5 input format: 2,634 input tokens per step), a global
  batch of 4 trajectories of 5 steps, ZeRO-0, `train.precision: auto`;
* heldout: the held-out-sized workload, one task (reacher.easy) of 200 episodes x 1,000 steps
  (generated once, ~200k transitions), the tiny model at batch 32 x 5.

samples/s = trajectories per second of the last logging window (after warm-up); MFU = App. E.2
FLOPs per update (B x T time steps) x updates/s / the matmul peak of the run's precision (fp32
or bf16) measured here, by the same process. `--parity N` instead trains the tiny model N
updates in fp32 and in bf16 autocast and prints (and plots) both loss curves. Results go into
BENCHMARKS.md by hand.
"""

from __future__ import annotations

import argparse
import contextlib
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


#: The held-out-sized workload: one task, 200 episodes of 1,000 steps (200k transitions).
HELDOUT = [
    "data.episode_steps=1000",
    "data.render=false",
    "data.groups=[{name: expert, tasks: [reacher.easy], quality: 1.0, episodes_per_task: 200}]",
]


def make_heldout(root: Path) -> None:
    from pac.config import load_config
    from pac.data import TaskTokenizer, store_root, tokenizer_path
    from pac.data.generate import generate_group

    if (root / "tokenizer" / "spm.model").is_file():
        return
    cfg = load_config(overrides=HELDOUT)
    generate_group(cfg, "expert", store_root(root), workers=2, progress=False)
    TaskTokenizer.train(tokenizer_path(root), cfg.data.tokenizer_vocab, cfg.data.tokenizer_type)


def peak_flops(precision: str = "fp32") -> float:
    """Best matmul throughput over a few square sizes (FLOP/s) in the precision's dtype."""
    from pac.train.ds_config import precision_dtype
    from pac.train.plan import measure_matmul_peak

    sizes = (512, 1024, 2048) if precision == "fp32" else (512, 1024)  # emulated bf16: slow
    return max(measure_matmul_peak("cpu", n, 1.0, precision_dtype(precision)) for n in sizes)


#: The tiny scale before the laptop Table 1 chose a smaller one (pac.config.SCALES).
OLD_TINY = ["model.d_z=128", "model.num_blocks=5", "model.widening=2", "model.num_latents=32"]


@contextlib.contextmanager
def old_path():
    """The trainer before `train.precision: auto` and the fused CPU AdamW: fp32, torch's
    per-tensor AdamW loop (the DeepSpeed config without `fused`)."""
    import pac.train.ds_config as dc

    original = dc.deepspeed_config

    def without_fused(*args, **kwargs):
        config = original(*args, **kwargs)
        config["optimizer"]["params"].pop("fused", None)
        return config

    dc.deepspeed_config = without_fused
    try:
        yield
    finally:
        dc.deepspeed_config = original


def run(name: str, params: str | None, overrides: list[str], root: Path,
        peaks: dict[str, float], data: list[str] | None = None, data_root: Path | None = None,
        old: bool = False) -> dict:
    from pac.config import load_config
    from pac.train import train
    from pac.train.plan import parameter_counts, training_flops_per_update

    out = root / "runs" / name
    shutil.rmtree(out, ignore_errors=True)
    cfg = load_config(params, [
        *(DATA if data is None else data), *overrides,
        f"train.out_dir={out}",
        f"tracking.uri=sqlite:///{root / 'mlruns' / 'mlflow.db'}",
        f"tracking.artifact_dir={root / 'mlruns' / 'artifacts'}",
    ])
    cpu0 = time.process_time()
    with old_path() if old else contextlib.nullcontext():
        result = train(cfg, data_root=data_root or root / "data")
    cpu = time.process_time() - cpu0
    last = result.history[-1]
    flops = training_flops_per_update(cfg)
    if result.precision not in peaks:
        peaks[result.precision] = peak_flops(result.precision)
    row = {
        "run": name,
        "params": parameter_counts(cfg.model)[0],
        "zero": cfg.train.zero_stage,
        "precision": result.precision,
        "batch": f"{cfg.train.global_batch}x{cfg.data.trajectory_length}",
        "updates_per_s": last["steps_per_s"],
        "samples_per_s": last["samples_per_s"],
        "transitions_per_s": last["samples_per_s"] * cfg.data.trajectory_length,
        "gflop_per_update": flops / 1e9,
        "mfu": flops * last["steps_per_s"] / peaks[result.precision],
        "trainer_mfu": last["mfu"],  # against the trainer's own (shorter) peak measurement
        "process_cpu_s": cpu,
        "load": os.getloadavg()[0],
    }
    shutil.rmtree(out, ignore_errors=True)  # checkpoints of XS are ~1 GB
    return row


def parity(root: Path, updates: int, batch: int, log_every: int, plot: Path | None) -> None:
    """fp32 vs bf16 (autocast) loss curves of the tiny default: the same data, initial weights
    and loss samples; prints both curves and the maximum relative difference, and plots them."""
    from pac.config import load_config
    from pac.train import train

    curves = {}
    for precision in ("fp32", "bf16"):
        out = root / "runs" / f"parity-{precision}"
        shutil.rmtree(out, ignore_errors=True)
        cfg = load_config(None, [
            *DATA, f"train.steps={updates}", f"train.log_every={log_every}",
            f"train.global_batch={batch}",
            f"train.checkpoint_every={updates}", f"train.precision={precision}",
            f"train.out_dir={out}",
            f"tracking.uri=sqlite:///{root / 'mlruns' / 'mlflow.db'}",
            f"tracking.artifact_dir={root / 'mlruns' / 'artifacts'}",
        ])
        result = train(cfg, data_root=root / "data")
        curves[precision] = [(h["step"], h["loss/total"]) for h in result.history]
        shutil.rmtree(out, ignore_errors=True)
    rel = [abs(b - a) / abs(a) for (_, a), (_, b) in zip(curves["fp32"], curves["bf16"])]
    print("| update | fp32 loss/total | bf16 loss/total | relative difference |")
    print("|---:|---:|---:|---:|")
    for ((step, a), (_, b)), r in zip(zip(curves["fp32"], curves["bf16"]), rel):
        print(f"| {step} | {a:.3f} | {b:.3f} | {100 * r:.2f}% |")
    first, last = curves["bf16"][0][1], curves["bf16"][-1][1]
    print(f"max relative difference {100 * max(rel):.2f}% (mean {100 * sum(rel) / len(rel):.2f}%);"
          f" bf16 loss {first:.3f} -> {last:.3f}, fp32 {curves['fp32'][0][1]:.3f} ->"
          f" {curves['fp32'][-1][1]:.3f}")
    if plot is not None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 3.5))
        for precision, style in (("fp32", "-"), ("bf16", "--")):
            steps, losses = zip(*curves[precision])
            ax.plot(steps, losses, style, label=precision)
        ax.set_xlabel("update")
        ax.set_ylabel(f"loss/total (mean of {log_every} updates)")
        ax.set_title(f"tiny, batch {batch}: fp32 vs bf16 autocast, max rel. diff"
                     f" {100 * max(rel):.2f}%")
        ax.legend()
        fig.tight_layout()
        fig.savefig(plot, dpi=100)
        print(f"plot -> {plot}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--updates", type=int, default=12, help="updates per logging window")
    parser.add_argument("--xs-updates", type=int, default=3)
    parser.add_argument("--runs", nargs="+", default=["tiny", "zero3", "xs", "heldout"],
                        choices=["tiny", "zero3", "xs", "heldout"])
    parser.add_argument("--root", type=Path, default=Path("/tmp/pac_bench_train"))
    parser.add_argument("--parity", type=int, default=0, metavar="UPDATES",
                        help="instead: fp32 vs bf16 loss curves over this many tiny updates")
    parser.add_argument("--parity-batch", type=int, default=32,
                        help="--parity: train.global_batch (32 = the tiny default)")
    parser.add_argument("--plot", type=Path, default=None, help="--parity: write the plot here")
    args = parser.parse_args()
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    make_data(args.root / "data")
    if args.parity:
        parity(args.root, args.parity, args.parity_batch, 5, args.plot)
        return
    peaks = {"fp32": peak_flops("fp32")}
    print(f"fp32 matmul peak: {peaks['fp32'] / 1e9:.1f} GFLOP/s; load average {os.getloadavg()}")

    def window(n: int) -> list[str]:  # two logging windows: warm-up, then the measured one
        return [f"train.steps={2 * n}", f"train.log_every={n}", f"train.checkpoint_every={2 * n}"]

    rows = []
    if "tiny" in args.runs:  # old and new alternate, twice: the ratio is measured side by side
        for i in (1, 2):
            rows.append(run(f"tiny-old-default-{i}", None, [*window(args.updates), *OLD_TINY,
                            "train.precision=fp32"], args.root, peaks, old=True))
            rows.append(run(f"tiny-old-fp32-{i}", None, [*window(args.updates),
                            "train.precision=fp32"], args.root, peaks, old=True))
            rows.append(run(f"tiny-new-defaults-{i}", None, window(args.updates), args.root,
                            peaks))
    if "zero3" in args.runs:
        rows.append(run("tiny-zero3", None, [*window(args.updates), "train.zero_stage=3"],
                        args.root, peaks))
    if "xs" in args.runs:
        rows.append(run("XS-zero0", "params/presets/XS.yaml",
                        [*window(args.xs_updates), "train.global_batch=4", "train.zero_stage=0",
                         "train.backend=gloo", "train.launcher=local"], args.root, peaks))
    if "heldout" in args.runs:
        make_heldout(args.root / "heldout")
        rows.append(run("heldout-200x1000", None, window(args.updates), args.root, peaks,
                        data=HELDOUT, data_root=args.root / "heldout"))
    print(f"fp32 matmul peak after: {peak_flops() / 1e9:.1f} GFLOP/s;"
          f" load average {os.getloadavg()}; peaks used (GFLOP/s):"
          f" { {k: round(v / 1e9, 1) for k, v in peaks.items()} }")
    print("| run | params | ZeRO | precision | batch (B x T) | updates/s | samples/s |"
          " transitions/s | GFLOP/update (E.2) | MFU (peak of its precision) | load |")
    print("|---|---:|---:|---|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['run']} | {r['params'] / 1e6:.1f}M | {r['zero']} | {r['precision']} |"
              f" {r['batch']} | {r['updates_per_s']:.2f} | {r['samples_per_s']:.1f} |"
              f" {r['transitions_per_s']:.1f} | {r['gflop_per_update']:.1f} |"
              f" {100 * r['mfu']:.1f}% | {r['load']:.1f} |")
    tiny = {k: [r["updates_per_s"] for r in rows if r["run"].startswith(k)]
            for k in ("tiny-old-default", "tiny-old-fp32", "tiny-new")}
    if tiny["tiny-new"]:
        new = sum(tiny["tiny-new"])
        print(f"tiny: new defaults / old default (OLD_TINY, fp32 path) ="
              f" {new / sum(tiny['tiny-old-default']):.2f}x; new defaults / the same model on"
              f" the old fp32 path = {new / sum(tiny['tiny-old-fp32']):.2f}x"
              " (updates/s summed over the alternating runs)")
    print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
