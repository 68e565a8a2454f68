"""The GPU check: bf16 DeepSpeed training, NCCL, CUDA resume and bf16 inference, in one run.

    python benchmarks/gpu_check.py --out runs/gpu_check            # on a GPU machine, <= 8 min
    python benchmarks/gpu_check.py --dry-run --out /tmp/gpu_check   # on CPU, tiny sizes, < 1 min

Every GPU path of the pipeline run once, for real, on the machine at hand. It needs nothing
from outside the machine: it generates its own small dataset with the pipeline's generators
(``pac.data.generate``, no rendering: the sampler gives the same padded image slots, so the
input format and the FLOPs are those of Table 5) or random tensors in the padded input format
(``pac.model.examples.random_batch``), and writes everything under ``--out``. It prints one
table and writes it as ``gpu_check.md`` and ``gpu_check.json``. The parts:

1. ``peak``: the bf16 matmul peak, best of a few square sizes (the MFU denominator);
2. ``train``: ``pac.train.train`` with params/presets/XXS.yaml in bf16, ZeRO-2 over NCCL, one
   rank: updates/s, samples/s (trajectories, as the trainer logs them), MFU by App. E.2
   (``training_flops_per_update``) against (1), peak GPU memory
   (``torch.cuda.max_memory_allocated``) against ``pac plan``'s model states + theta' for the
   same settings; ``parity``: its first-update loss against the same run on the CPU in fp32
   (``pac train`` in a subprocess that sees no GPU); ``train2``: the same run on two ranks,
   started by ``torchrun`` (where the machine has two GPUs);
3. ``resume``: a second run resumes from the first run's mid-way checkpoint; its losses must
   equal the uninterrupted run's from the next update on;
4. ``infer``: ``PolicyServer.act`` at batch 1 with the full Table-5 input (5 camera images,
   223 proprio entries, 50 text tokens, 38 actions) for XXS, S and L in bf16: Hz with argmax
   decoding and with ``q_rerank`` K = 10 (the paper: L at 20 Hz on an RTX 3090);
5. ``zero3``: a ZeRO-3 engine for the largest scale whose ``pac plan`` ZeRO-3 figure fits one
   GPU, a few updates: measured model-state and peak memory against the plan.

Each part fails soft: its error goes into its table row and the check goes on; the exit code is
1 when any part failed. ``--skip`` leaves parts out. ``--dry-run`` hides every GPU and runs the
same code on the CPU with gloo, in fp32 (bf16 autocast at batch 1 measured 4x slower than fp32
on the shared 2-core host) and with the tiny model (the inference rows use it too).

Choices the issue leaves open, and why:

* the XXS batch is 128 trajectories of 5 steps in micro-batches of 64, not the paper's 512:
  the CPU fp32 reference of the parity row trains one update of the same batch on the host,
  which must fit the 8-minute budget (``--batch`` / ``--micro-batch`` change both runs);
* the learning rate is 1e-4 warming to 3e-4 over 2 updates, not the preset's 1e-6 start, so
  that a few updates move the weights enough for the resume comparison to see a wrong state;
* the parity tolerance is 2% relative: bf16 autocast on the CPU measured 0.18% for the first
  loss window (tests/train/test_train_precision.py), and DeepSpeed's bf16 mode on GPUs also
  rounds the weights themselves to bf16. The first update's loss does not depend on the
  sampled actions a' (the zero-initialised heads give a uniform policy and the same Q for
  every action), so the CUDA and CPU generators' different streams do not enter it;
* resume is exact on the CPU (the check requires torch.equal); on CUDA, kernels with atomic
  adds are not bitwise reproducible, so the check reports the largest difference and passes
  below 1e-3 relative;
* ZeRO-3 runs its engine in a short loop (``build_engine`` + ``PACObjective``, the trainer's
  own pieces) rather than ``train()``: ``train()`` ends with a checkpoint, an export and MLflow
  copies of both, about 30 GB of writes for L, beyond the time budget and the disk.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import shutil
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PRESETS = ROOT / "params" / "presets"
PARTS = ("peak", "train", "parity", "train2", "resume", "infer", "zero3")
GIB = 2**30

#: Relative tolerance of the first-update loss, bf16 on the device vs fp32 on the CPU.
PARITY_RTOL = 0.02
#: Relative tolerance of the resumed losses on CUDA (exact equality on the CPU).
CUDA_RESUME_RTOL = 1e-3
#: Scales tried for ZeRO-3 on one GPU, largest first.
ZERO3_SCALES = ("L", "M", "S", "XS", "XXS")

#: The generated dataset: three tasks, short episodes, no rendering (the sampler fills the
#: image slots with zero pixels: same tensors, same FLOPs as rendered ones).
DATA = [
    "data.render=false",
    "data.episode_steps=50",
    "data.groups=[{name: expert, tasks: [point_mass.easy, cartpole.balance, reacher.easy],"
    " quality: 1.0, episodes_per_task: 4}]",
]
DRY_DATA = [
    "data.render=false",
    "data.episode_steps=25",
    "data.groups=[{name: expert, tasks: [point_mass.easy, cartpole.balance],"
    " quality: 1.0, episodes_per_task: 2}]",
]
#: The dry run's model: the tiny default (proprioception and text; no camera, which costs
#: more CPU time than the whole rest of the dry run on a loaded 2-core machine).
DRY_MODEL: list[str] = []
LAUNCH_ENV = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
              "LOCAL_WORLD_SIZE", "GROUP_RANK", "ROLE_RANK", "TORCHELASTIC_RUN_ID")


@dataclass
class Row:
    """One line of the table: a part, what it checks, its outcome and its numbers."""

    part: str
    check: str
    status: str = "skipped"  # ok | FAIL | skipped
    result: str = ""
    target: str = ""
    values: dict = field(default_factory=dict)


@dataclass
class Settings:
    """Sizes of this run: the GPU check, or its CPU dry run."""

    dry: bool
    out: Path
    device: str
    params: str | None  # the training preset (None: the embedded tiny default)
    data: list[str]
    model: list[str]  # model overrides of every part (the dry run's camera)
    batch: int
    micro_batch: int
    updates: int
    warmup: int
    peak_sizes: tuple[int, ...]
    infer_scales: tuple[tuple[str, str | None], ...]  # (label, preset)
    infer_calls: int
    zero3_scales: tuple[tuple[str, str | None], ...]
    sampler_workers: int
    ranks2: bool
    precision: str = "bf16"  # of the training and inference parts


# --- helpers -------------------------------------------------------------------------------------


def synchronize(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def reset_peak(device: str) -> None:
    """Start a peak-memory window: CUDA's allocator counters, or the host's RSS high-water mark
    (Linux resets VmHWM when 5 is written to clear_refs)."""
    import torch

    gc.collect()
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    else:
        try:
            Path("/proc/self/clear_refs").write_text("5")
        except OSError:
            pass


def peak_bytes(device: str) -> int:
    """Peak memory since :func:`reset_peak`: GPU bytes allocated, or the host's peak RSS."""
    import torch

    if device == "cuda":
        torch.cuda.synchronize()
        return int(torch.cuda.max_memory_allocated())
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def device_memory_gib(device: str) -> float:
    import torch

    if device == "cuda":
        return torch.cuda.get_device_properties(0).total_memory / GIB
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GIB


def clean_env(**extra: str) -> dict[str, str]:
    """The environment for a child run: no rendezvous variables of this process's own group."""
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_ENV}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    env.pop("MLFLOW_TRACKING_URI", None)
    return env | extra


def steady_rate(history: list[dict], warmup: int) -> float:
    """Updates/s over the logged updates after `warmup` (each window is one update): the
    number of updates over their summed times."""
    rates = [h["steps_per_s"] for h in history if h["step"] > warmup] or \
        [h["steps_per_s"] for h in history]
    return len(rates) / sum(1.0 / r for r in rates)


def plan_row(cfg, gpus: int, stage: int, gpu_mem: float):
    """`pac plan`'s memory row (no offload) for this config, `gpus` GPUs, ZeRO `stage`."""
    from pac.train.plan import make_plan

    plan = make_plan(cfg, gpus, gpu_mem)
    return plan, next(r for r in plan.rows if r.stage == stage and r.offload == "none")


def flops(v: float) -> str:
    return f"{v / 1e12:.1f} TFLOP/s" if v >= 1e12 else f"{v / 1e9:.1f} GFLOP/s"


def gib(n: float) -> str:
    return f"{n / GIB:.2f} GiB"


# --- the parts -----------------------------------------------------------------------------------


class Check:
    """The parts in order; each one fills its row, shared results live on the instance."""

    def __init__(self, s: Settings) -> None:
        self.s = s
        self.rows: list[Row] = []
        self.peak_flops = 0.0
        self.data_root = s.out / "data"
        self.train_result = None  # the one-rank run of part 2 (also the uninterrupted run of 3)
        self.train_cfg = None

    # -- configs ----------------------------------------------------------------------------

    def overrides(self, name: str, *extra: str) -> list[str]:
        s = self.s
        return [
            *s.data,
            *s.model,
            f"train.steps={s.updates}",
            f"train.global_batch={s.batch}",
            f"train.micro_batch={s.micro_batch}",
            "train.log_every=1",  # one update per window: the first loss and per-update times
            f"train.checkpoint_every={max(1, s.updates // 2)}",
            "train.warmup_steps=2",
            "train.lr_init=1.0e-4",
            "train.lr_peak=3.0e-4",
            f"train.precision={s.precision}",
            "train.zero_stage=2",
            f"train.backend={'nccl' if s.device == 'cuda' else 'gloo'}",
            "train.launcher=local",
            f"data.sampler_workers={s.sampler_workers}",
            f"train.out_dir={s.out / 'runs' / name}",
            f"tracking.uri=sqlite:///{s.out / 'mlruns' / 'mlflow.db'}",
            f"tracking.artifact_dir={s.out / 'mlruns' / 'artifacts'}",
            *extra,
        ]

    def config(self, name: str, *extra: str):
        from pac.config import load_config

        return load_config(self.s.params, self.overrides(name, *extra))

    # -- running a part ---------------------------------------------------------------------

    def part(self, row: Row, fn: Callable[[Row], None], skip: set[str], needs: str = "") -> None:
        self.rows.append(row)
        if row.part in skip:
            row.result = "skipped (--skip)"
            return
        if needs and not self.ok(needs):
            row.status, row.result = "FAIL", f"needs part {needs}, which did not pass"
            return
        start = time.perf_counter()
        print(f"gpu_check: {row.part}: {row.check} ...", flush=True)
        try:
            fn(row)
            if row.status == "skipped" and not row.result:
                row.status = "ok"
        except Exception as exc:  # fail soft: the error goes into the row
            row.status = "FAIL"
            row.result = f"{type(exc).__name__}: {exc}".replace("\n", " ")[:400]
            traceback.print_exc()
        row.values["seconds"] = round(time.perf_counter() - start, 1)
        print(f"gpu_check: {row.part}: {row.status} {row.result}", flush=True)

    def ok(self, part: str) -> bool:
        return any(r.part == part and r.status == "ok" for r in self.rows)

    # 1 -------------------------------------------------------------------------------------

    def peak(self, row: Row) -> None:
        import torch

        from pac.train.ds_config import precision_dtype
        from pac.train.plan import measure_matmul_peak

        seconds = 0.2 if self.s.dry else 1.0
        dtype = precision_dtype(self.s.precision)
        by_size = {n: measure_matmul_peak(self.s.device, n, seconds, dtype)
                   for n in self.s.peak_sizes}
        best = max(by_size, key=by_size.get)
        self.peak_flops = by_size[best]
        row.values |= {"flops": self.peak_flops, "by_size": by_size, "best_size": best}
        row.result = (f"{flops(self.peak_flops)} at {best}^2 ("
                      + ", ".join(f"{n}^2: {flops(v)}" for n, v in by_size.items()) + ")")
        if self.s.device == "cuda":
            row.result += f"; {torch.cuda.get_device_name(0)}"
        row.status = "ok"

    # data ----------------------------------------------------------------------------------

    def make_data(self) -> None:
        """The generated dataset and its tokenizer, once (the training parts need it)."""
        from pac.config import load_config
        from pac.data import TaskTokenizer, store_root, tokenizer_path
        from pac.data.generate import generate_group

        if tokenizer_path(self.data_root).is_file():
            return
        cfg = load_config(self.s.params, [*self.s.data, *self.s.model])
        for g in cfg.data.groups:
            generate_group(cfg, g.name, store_root(self.data_root), workers=1, progress=False)
        TaskTokenizer.train(tokenizer_path(self.data_root), cfg.data.tokenizer_vocab,
                            cfg.data.tokenizer_type, num_tokens=cfg.model.num_text_tokens)

    # 2 -------------------------------------------------------------------------------------

    def train(self, row: Row) -> None:
        from pac.train import train
        from pac.train.plan import training_flops_per_update

        t0 = time.perf_counter()
        self.make_data()
        row.values["data_seconds"] = round(time.perf_counter() - t0, 1)
        cfg = self.config("train")
        shutil.rmtree(cfg.train.out_dir, ignore_errors=True)
        reset_peak(self.s.device)
        result = train(cfg, data_root=self.data_root)
        peak = peak_bytes(self.s.device)
        self.train_result, self.train_cfg = result, cfg
        self.throughput_row(row, cfg, result.history, peak, 1, result.precision)
        row.values["first_loss"] = result.history[0]["loss/total"]
        row.values["flops_per_update"] = training_flops_per_update(cfg)

    def throughput_row(self, row: Row, cfg, history: list[dict], peak: int, ranks: int,
                       precision: str) -> None:
        from pac.train.plan import training_flops_per_update

        if precision != self.s.precision:
            raise RuntimeError(f"the run trained in {precision}, not {self.s.precision}")
        ups = steady_rate(history, self.s.warmup)
        flops = training_flops_per_update(cfg)
        mfu = flops * ups / (self.peak_flops * ranks) if self.peak_flops else float("nan")
        _, plan = plan_row(cfg, ranks, cfg.train.zero_stage, device_memory_gib(self.s.device))
        predicted = plan.total_gib * GIB
        what = "GPU max_memory_allocated" if self.s.device == "cuda" else "host peak RSS"
        row.values |= {
            "updates_per_s": ups, "samples_per_s": ups * cfg.train.global_batch,
            "time_steps_per_s": ups * cfg.train.global_batch * cfg.data.trajectory_length,
            "mfu": mfu, "peak_memory_bytes": peak, "memory_measure": what,
            "plan_bytes": predicted, "memory_ratio": peak / predicted, "ranks": ranks,
            "losses": [h["loss/total"] for h in history],
        }
        row.result = (
            f"{ups:.2f} updates/s, {ups * cfg.train.global_batch:.1f} samples/s"
            f" ({cfg.train.global_batch}x{cfg.data.trajectory_length}), MFU {100 * mfu:.1f}%;"
            f" {what} {gib(peak)} vs plan {gib(predicted)} (states + theta', no activations;"
            f" x{peak / predicted:.2f})"
        )
        row.status = "ok"

    def parity(self, row: Row) -> None:
        """The first update of the same run on the CPU in fp32: `pac train` in a subprocess
        that sees no GPU (gloo)."""
        cpu = ("parity-cpu-fp32", "train.steps=1", "train.precision=fp32", "train.backend=gloo")
        cfg = self.config(*cpu)
        shutil.rmtree(cfg.train.out_dir, ignore_errors=True)
        args = [sys.executable, "-m", "pac.cli", "train", "--data-root", str(self.data_root)]
        if self.s.params:
            args += ["--params", self.s.params]
        for o in self.overrides(*cpu):
            args += ["--set", o]
        log = self.s.out / "parity-cpu-fp32.log"
        with open(log, "w") as f:
            proc = subprocess.run(args, env=clean_env(CUDA_VISIBLE_DEVICES=""), cwd=ROOT,
                                  stdout=f, stderr=subprocess.STDOUT, timeout=600)
        if proc.returncode:
            raise RuntimeError(f"CPU run exited {proc.returncode}: "
                               + log.read_text()[-300:].replace("\n", " "))
        ref = json.loads((Path(cfg.train.out_dir) / "metrics.json").read_text())["loss/total"]
        dev = self.train_result.history[0]["loss/total"]
        rel = abs(dev - ref) / abs(ref)
        row.values |= {"device_loss": dev, "cpu_fp32_loss": ref, "relative": rel,
                       "rtol": PARITY_RTOL}
        row.status = "ok" if rel <= PARITY_RTOL else "FAIL"
        row.result = (f"{self.s.device} {self.s.precision} {dev:.5f} vs CPU fp32 {ref:.5f}:"
                      f" {100 * rel:.3f}% (<= {100 * PARITY_RTOL:g}%)")
        shutil.rmtree(cfg.train.out_dir, ignore_errors=True)

    def train2(self, row: Row) -> None:
        """Two ranks started by torchrun, each running this script's worker (`pac train`'s
        `train()` plus its own peak-memory reading)."""
        if not self.s.ranks2:
            row.result = "skipped: fewer than 2 GPUs (--ranks2 forces it)"
            return
        self.make_data()
        cfg = self.config("train2")
        shutil.rmtree(cfg.train.out_dir, ignore_errors=True)
        spec = self.s.out / "train2.json"
        spec.write_text(json.dumps({"params": self.s.params, "overrides": self.overrides("train2"),
                                    "data_root": str(self.data_root), "out": str(spec)}))
        # torchrun, as `python -m torch.distributed.run`: the ranks run this interpreter (the
        # `torchrun` script's shebang may name another path to the environment, and DeepSpeed's
        # JIT-op cache is kept per path: a cold rebuild on CPU)
        args = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                "--nproc_per_node", "2", str(Path(__file__).resolve()), "--worker", str(spec)]
        reset_peak(self.s.device)  # hand this process's cached GPU memory back first
        log = self.s.out / "train2.log"
        with open(log, "w") as f:
            proc = subprocess.run(args, env=clean_env(), cwd=ROOT, stdout=f,
                                  stderr=subprocess.STDOUT, timeout=600)
        if proc.returncode:
            raise RuntimeError(f"torchrun exited {proc.returncode}: "
                               + log.read_text()[-300:].replace("\n", " "))
        ranks = [json.loads(spec.with_suffix(f".rank{r}.json").read_text()) for r in (0, 1)]
        self.throughput_row(row, cfg, ranks[0]["history"], max(r["peak"] for r in ranks), 2,
                            ranks[0]["precision"])
        row.values["peak_per_rank"] = [r["peak"] for r in ranks]
        if self.train_result is not None:  # the same data and initial weights as one rank
            one = self.train_result.history[0]["loss/total"]
            row.result += f"; first loss {row.values['losses'][0]:.5f} (1 rank: {one:.5f})"
        shutil.rmtree(cfg.train.out_dir, ignore_errors=True)

    # 3 -------------------------------------------------------------------------------------

    def resume(self, row: Row) -> None:
        """A fresh run folder holding only the uninterrupted run's mid-way checkpoint, resumed
        with `train(resume=True)`: every later loss must equal the uninterrupted run's."""
        from pac.train import train
        from pac.train.checkpoints import find_latest, tag

        ref = self.train_result
        mid = max(1, self.s.updates // 2)
        src = ref.out_dir / "checkpoints" / tag(mid)
        cfg = self.config("resume")
        dst = Path(cfg.train.out_dir)
        shutil.rmtree(dst, ignore_errors=True)
        shutil.copytree(src, dst / "checkpoints" / src.name)
        if find_latest(dst / "checkpoints").step != mid:
            raise RuntimeError(f"the copied checkpoint {src} is not complete")
        result = train(cfg, resume=True, data_root=self.data_root)
        if result.start_step != mid:
            raise RuntimeError(f"resumed from update {result.start_step}, expected {mid}")
        expected = {h["step"]: h["loss/total"] for h in ref.history}
        got = {h["step"]: h["loss/total"] for h in result.history}
        steps = sorted(got)
        if steps != list(range(mid + 1, self.s.updates + 1)):
            raise RuntimeError(f"the resumed run logged updates {steps}")
        rel = max(abs(got[k] - expected[k]) / abs(expected[k]) for k in steps)
        exact = all(got[k] == expected[k] for k in steps)
        tol = 0.0 if self.s.device == "cpu" else CUDA_RESUME_RTOL
        row.values |= {"resumed_from": mid, "next_loss": got[mid + 1],
                       "uninterrupted_next_loss": expected[mid + 1], "max_relative": rel,
                       "exact": exact, "rtol": tol}
        row.status = "ok" if exact or rel <= tol else "FAIL"
        row.result = (f"resumed at {mid}: next loss {got[mid + 1]:.6f} vs uninterrupted"
                      f" {expected[mid + 1]:.6f}; updates {mid + 1}-{self.s.updates}:"
                      f" {'bit-identical' if exact else f'max relative diff {rel:.2e}'}")
        shutil.rmtree(dst, ignore_errors=True)

    # 4 -------------------------------------------------------------------------------------

    def infer(self, row: Row, label: str, params: str | None) -> None:
        """PolicyServer.act at batch 1: a randomly initialised model (the speed does not depend
        on the weights) with every camera slot filled, bf16 autocast."""
        import numpy as np
        import torch

        from pac.config import load_config
        from pac.data import TaskTokenizer, tokenizer_path
        from pac.evaluation.rollout import PolicyServer
        from pac.model import PerceiverActorCritic
        from pac.tasks import TASKS
        from pac.train.plan import parameter_counts

        self.make_data()
        cfg = load_config(params, self.s.model)
        m = cfg.model
        torch.manual_seed(0)
        with torch.device(self.s.device):
            model = PerceiverActorCritic(m)
        tokenizer = TaskTokenizer.load(tokenizer_path(self.data_root), m.num_text_tokens)
        task = "cartpole.balance"
        spec = TASKS[task]
        rng = np.random.default_rng(0)
        proprio = rng.standard_normal(spec.num_proprio).astype(np.float32)
        images = (rng.integers(0, 256, (m.num_images, m.image_size, m.image_size, 3),
                               dtype=np.uint8) if m.num_images else None)
        hz = {}
        for decode in ("argmax", "q_rerank"):
            server = PolicyServer(model, cfg, tokenizer, decode=decode, num_candidates=10,
                                  precision=self.s.precision)
            generator = torch.Generator(device=self.s.device).manual_seed(0)
            for _ in range(5):  # warm-up: kernel selection, autotuning
                server.act(proprio, task, images, generator)
            synchronize(self.s.device)
            server.latencies.clear()
            for _ in range(self.s.infer_calls):
                server.act(proprio, task, images, generator)
            hz[decode] = server.inference_hz
        params_n = parameter_counts(m)[0]
        row.values |= {"scale": m.scale, "params": params_n, "hz_argmax": hz["argmax"],
                       "hz_q_rerank_10": hz["q_rerank"], "calls": self.s.infer_calls}
        row.result = (f"{m.scale} ({params_n / 1e6:.1f}M): argmax {hz['argmax']:.1f} Hz,"
                      f" q_rerank K=10 {hz['q_rerank']:.1f} Hz")
        row.status = "ok"
        del model
        gc.collect()

    # 5 -------------------------------------------------------------------------------------

    def zero3(self, row: Row) -> None:
        """The largest scale whose ZeRO-3 plan fits one GPU, a few updates of its engine on
        random batches: model-state memory (allocated after the first update, activations
        freed) and peak memory against the plan."""
        import torch

        from pac.config import load_config
        from pac.model import PerceiverActorCritic
        from pac.model.examples import random_batch
        from pac.train.ds_config import batch_layout, precision_dtype
        from pac.train.engine import PACObjective, build_engine, init_distributed
        from pac.train.plan import make_plan
        from pac.train.target import make_target, refresh_target
        from pac.train.trainer import seed_everything, split

        mem = device_memory_gib(self.s.device)
        chosen = None
        for label, params in self.s.zero3_scales:
            cfg = load_config(params, [
                *self.s.model,
                "train.zero_stage=3", f"train.precision={self.s.precision}",
                "train.global_batch=2",
                "train.micro_batch=1", "loss.num_action_samples=4", "train.warmup_steps=1",
                f"train.backend={'nccl' if self.s.device == 'cuda' else 'gloo'}",
            ])
            plan = make_plan(cfg, 1, mem)
            planned = next(r for r in plan.rows if r.stage == 3 and r.offload == "none")
            if plan.fits(planned):
                chosen = (label, cfg, plan, planned)
                break
        if chosen is None:
            raise RuntimeError(f"no scale fits ZeRO-3 on one device of {mem:.0f} GiB")
        label, cfg, plan, planned = chosen
        device = init_distributed(cfg.train.backend)
        layout = batch_layout(cfg.train, 1)
        updates = 3
        seed_everything(0)
        model = PerceiverActorCritic(cfg.model)
        reset_peak(self.s.device)
        base = torch.cuda.memory_allocated() if self.s.device == "cuda" else 0
        generator = torch.Generator(device=device).manual_seed(1)
        engine = build_engine(PACObjective(model, cfg, generator, self.s.precision), cfg, 1)
        del model
        target = make_target(lambda: PerceiverActorCritic(cfg.model), device,
                             precision_dtype(self.s.precision))
        refresh_target(engine.module.model, target)
        states, times = 0, []
        for step in range(updates):
            batch = random_batch(cfg.model, cfg.train.global_batch, cfg.data.trajectory_length,
                                 seed=step).to(device)
            synchronize(self.s.device)
            start = time.perf_counter()
            for micro in split(batch, layout.micro_batch):
                loss, _ = engine(micro, target, step)
                engine.backward(loss)
                engine.step()
            synchronize(self.s.device)
            times.append(time.perf_counter() - start)
            if not math.isfinite(float(loss.detach())):
                raise FloatingPointError(f"non-finite ZeRO-3 loss at update {step}: {loss}")
            if step == 0 and self.s.device == "cuda":
                states = torch.cuda.memory_allocated() - base
        peak = peak_bytes(self.s.device) - base
        predicted = planned.total_gib * GIB
        row.values |= {"scale": cfg.model.scale, "params": plan.params, "gpu_gib": mem,
                       "plan_bytes": predicted, "states_bytes": states, "peak_bytes": peak,
                       "states_ratio": states / predicted, "seconds_per_update": times[1:],
                       "batch": f"{cfg.train.global_batch}x{cfg.data.trajectory_length}"}
        what = "GPU" if self.s.device == "cuda" else "host RSS"
        row.result = (f"{cfg.model.scale} ({plan.params / 1e6:.0f}M) on {mem:.0f} GiB: plan"
                      f" {gib(predicted)}; measured states {gib(states)}"
                      f" (x{states / predicted:.2f}), {what} peak {gib(peak)};"
                      f" {min(times[1:]):.2f} s/update at"
                      f" {cfg.train.global_batch}x{cfg.data.trajectory_length}")
        row.status = "ok"
        del engine, target
        gc.collect()
        if self.s.device == "cuda":
            torch.cuda.empty_cache()

    # -- all of it --------------------------------------------------------------------------

    def run(self, skip: set[str]) -> list[Row]:
        dev = "CUDA" if self.s.device == "cuda" else "CPU"
        backend = "NCCL" if self.s.device == "cuda" else "gloo"
        scale = "XXS" if self.s.params else "tiny"
        self.part(Row("peak", f"{self.s.precision} matmul peak ({dev}, best of "
                      + ", ".join(f"{n}^2" for n in self.s.peak_sizes) + ")"), self.peak, skip)
        prec = self.s.precision
        self.part(Row("train", f"{scale} train, {prec}, ZeRO-2, 1 rank, {backend}",
                      target="MFU >= 35%; memory within 15% of plan"), self.train, skip)
        self.part(Row("parity", f"first-update loss, {dev} {prec} vs CPU fp32 (pac train)",
                      target=f"within {100 * PARITY_RTOL:g}%"), self.parity, skip,
                  needs="train")
        self.part(Row("train2", f"{scale} train, {prec}, ZeRO-2, 2 ranks (torchrun), {backend}"),
                  self.train2, skip)
        self.part(Row("resume", f"checkpoint save + resume on {dev}",
                      target="next losses equal" + (" (exact)" if dev == "CPU" else
                                                    f" (<= {CUDA_RESUME_RTOL:g} rel.)")),
                  self.resume, skip, needs="train")
        for label, params in self.s.infer_scales:
            self.part(Row("infer", f"PolicyServer.act batch 1, {prec}, {label}",
                          target=">= 20 Hz for L (paper, RTX 3090)" if label == "L" else ""),
                      lambda row, p=params, lb=label: self.infer(row, lb, p), skip)
        self.part(Row("zero3", "ZeRO-3, largest scale that fits one device",
                      target="states within 15% of plan"), self.zero3, skip)
        return self.rows


# --- output --------------------------------------------------------------------------------------


def table(rows: list[Row]) -> str:
    lines = ["| part | check | status | result | target |", "|---|---|---|---|---|"]
    for r in rows:
        cells = [r.part, r.check, r.status, r.result, r.target]
        lines.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    return "\n".join(lines)


def write_outputs(out: Path, rows: list[Row], header: dict) -> None:
    from pac.io import atomic_write_text

    md = f"# GPU check\n\n{json.dumps(header)}\n\n{table(rows)}\n"
    atomic_write_text(out / "gpu_check.md", md)
    atomic_write_text(out / "gpu_check.json",
                      json.dumps({"header": header, "rows": [asdict(r) for r in rows]},
                                 indent=1, default=str))


def settings(args: argparse.Namespace) -> Settings:
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.dry_run:
        return Settings(
            dry=True, out=args.out, device=device, params=None, data=DRY_DATA, model=DRY_MODEL,
            batch=args.batch or 4, micro_batch=args.micro_batch or 2, updates=args.updates or 4,
            warmup=1, peak_sizes=(512, 1024),
            infer_scales=(("XXS -> tiny", None), ("S -> tiny", None), ("L -> tiny", None)),
            infer_calls=10, zero3_scales=(("tiny", None),), sampler_workers=0,
            ranks2=args.ranks2, precision="fp32",
        )
    return Settings(
        dry=False, out=args.out, device=device, params=str(PRESETS / "XXS.yaml"), data=DATA,
        model=[],
        batch=args.batch or 128, micro_batch=args.micro_batch or 64, updates=args.updates or 12,
        warmup=2, peak_sizes=(4096, 8192, 16384),
        infer_scales=tuple((s, str(PRESETS / f"{s}.yaml")) for s in ("XXS", "S", "L")),
        infer_calls=50, zero3_scales=tuple((s, str(PRESETS / f"{s}.yaml")) for s in ZERO3_SCALES),
        sampler_workers=args.sampler_workers,
        ranks2=args.ranks2 or (device == "cuda" and torch.cuda.device_count() >= 2),
    )


def worker(spec_path: Path) -> int:
    """One rank of the two-rank run (started by torchrun): train() and this rank's peak."""
    from pac.config import load_config
    from pac.train import train
    from pac.train.engine import device_type, world_from_env

    spec = json.loads(spec_path.read_text())
    rank = world_from_env()[0]
    device = device_type()
    if device == "cuda":
        import torch

        torch.cuda.set_device(world_from_env()[1])
    reset_peak(device)
    result = train(load_config(spec["params"], spec["overrides"]), data_root=spec["data_root"])
    out = {"rank": rank, "peak": peak_bytes(device), "history": result.history,
           "precision": result.precision}
    spec_path.with_suffix(f".rank{rank}.json").write_text(json.dumps(out))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/gpu_check"),
                        help="output folder: data, runs, gpu_check.md, gpu_check.json")
    parser.add_argument("--dry-run", action="store_true",
                        help="hide every GPU: the same checks on the CPU, tiny sizes, gloo")
    parser.add_argument("--skip", nargs="*", default=[], choices=PARTS, help="parts to leave out")
    parser.add_argument("--batch", type=int, default=0,
                        help="trajectories per update (default 128; dry run 4)")
    parser.add_argument("--micro-batch", type=int, default=0,
                        help="trajectories per micro-batch (default 64; dry run 2)")
    parser.add_argument("--updates", type=int, default=0,
                        help="updates of the training runs (default 12; dry run 4)")
    parser.add_argument("--sampler-workers", type=int, default=4,
                        help="data.sampler_workers of the GPU runs (the dry run samples inline)")
    parser.add_argument("--ranks2", action="store_true",
                        help="run the two-rank row even without two GPUs (gloo on the CPU)")
    parser.add_argument("--worker", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.dry_run:
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # before torch looks for a GPU
        os.environ["OMP_NUM_THREADS"] = "1"  # steadier than 2 threads on a shared 2-core host
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    os.environ.setdefault("USERNAME", "pac")
    if args.worker is not None:
        return worker(args.worker)

    import torch

    s = settings(args)
    s.out = s.out.resolve()
    s.out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    rows = Check(s).run(set(args.skip))
    header = {
        "device": torch.cuda.get_device_name(0) if s.device == "cuda" else "cpu",
        "gpus": torch.cuda.device_count() if s.device == "cuda" else 0,
        "dry_run": s.dry, "torch": torch.__version__, "seconds": round(time.perf_counter() - start),
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
    }
    write_outputs(s.out, rows, header)
    print(f"\nGPU check on {header['device']} ({header['seconds']} s):\n")
    print(table(rows))
    print(f"\n-> {s.out / 'gpu_check.md'}, {s.out / 'gpu_check.json'}")
    return 1 if any(r.status == "FAIL" for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
