"""The DeepSpeed configuration built from params (Table 12 optimiser, ZeRO stage, precision).

One function turns a validated :class:`~pac.config.TrainConfig` plus the world size and device
into DeepSpeed's JSON config. Settings that cannot run (a ZeRO stage DeepSpeed lacks, a batch
that does not split over the ranks) raise :class:`~pac.config.ConfigError` before any compute.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pac.config import ConfigError, TrainConfig

if TYPE_CHECKING:
    import torch

#: AdamW epsilon (DeepSpeed's and torch's default; the paper does not list one).
ADAM_EPS = 1e-8


@dataclass(frozen=True)
class BatchLayout:
    """How the global batch of trajectories splits: global = micro * accumulation * world."""

    global_batch: int
    micro_batch: int
    accumulation: int
    world_size: int

    @property
    def per_rank(self) -> int:
        return self.micro_batch * self.accumulation


def batch_layout(t: TrainConfig, world_size: int) -> BatchLayout:
    """Micro-batch and gradient accumulation from the global batch and the world size."""
    if world_size < 1:
        raise ConfigError(f"world size must be >= 1, got {world_size}")
    if t.global_batch % world_size:
        raise ConfigError(
            f"train.global_batch={t.global_batch} is not divisible by the world size {world_size}:"
            " every rank must get the same number of trajectories"
        )
    per_rank = t.global_batch // world_size
    micro = t.micro_batch or per_rank
    if per_rank % micro:
        raise ConfigError(
            f"train.micro_batch={micro} does not divide the per-rank batch {per_rank}"
            f" (global_batch {t.global_batch} / world size {world_size})"
        )
    return BatchLayout(t.global_batch, micro, per_rank // micro, world_size)


#: CPU flags of native bf16 matrix arithmetic (AVX512-BF16 dot products, AMX tiles).
CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
#: bf16 must beat fp32 matmuls by this factor before `auto` picks it on a CPU: autocast adds
#: casts and keeps layer norms, softmaxes and the cross-entropies in fp32, so a matmul ratio
#: near 1 does not pay. (AVX512-BF16 EPYC: 2048^2 at ~405 vs ~180 GFLOP/s, 2.25x.)
CPU_BF16_MIN_SPEEDUP = 1.3


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set[str] | None:
    """The CPU's feature flags (Linux /proc/cpuinfo), or None where the file does not exist."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.partition(":")[2].split())
    return set()


@functools.cache
def cpu_bf16_speedup(size: int = 1024) -> float:
    """Measured bf16 / fp32 throughput of `size`^2 matmuls on this CPU (0.0 without native bf16).

    Without AVX512-BF16 or AMX, bf16 matmuls are emulated: on an AVX2-only EPYC a 1024^2 bf16
    matmul measured ~1 GFLOP/s against ~50 in fp32, so the flags are checked first and nothing
    is timed. With them (or where the flags cannot be read) two short matmul loops decide, once
    per process and size (about 0.3 s). The size matters: on a Xeon with AMX the ratio measured
    0.26 / 0.67 / 2.28 / 3.24 / 3.92 at 64 / 128 / 256 / 512 / 1024, and the trainer agreed: the
    D_Z 64 tiny model ran 19.3 updates/s in fp32 against 13.4 under bf16 autocast, while XS
    (D_Z 1024) reached 73% MFU in bf16 (BENCHMARKS.md, bench_train.py).
    """
    import torch

    from pac.train.plan import measure_matmul_peak

    flags = cpu_flags()
    if flags is not None and not flags & set(CPU_BF16_FLAGS):
        return 0.0
    fp32 = measure_matmul_peak("cpu", size, 0.15, torch.float32)
    return measure_matmul_peak("cpu", size, 0.15, torch.bfloat16) / fp32


def gpu_has_bf16() -> bool:
    """bf16 on the GPU: True unless a visible GPU says it lacks bf16 (pre-Ampere); a host
    without a visible GPU (a launcher node building the config) assumes the paper's bf16."""
    import torch

    return not torch.cuda.is_available() or torch.cuda.is_bf16_supported()


def effective_precision(t: TrainConfig, device_type: str, width: int = 1024) -> str:
    """The arithmetic a run uses: `train.precision`, with `auto` resolved on this machine.

    `auto` is bf16 on GPUs with bf16 and on CPUs whose bf16 matmuls at the model's `width`
    (D_Z) are measured at least CPU_BF16_MIN_SPEEDUP times faster than fp32
    (:func:`cpu_bf16_speedup`), fp32 elsewhere.
    An explicit `bf16` is honoured on CPU as well (autocast), even where it is slower.
    """
    if t.precision != "auto":
        return t.precision
    if device_type == "cuda":
        return "bf16" if gpu_has_bf16() else "fp32"
    return "bf16" if cpu_bf16_speedup(max(64, width)) >= CPU_BF16_MIN_SPEEDUP else "fp32"


def precision_dtype(precision: str) -> torch.dtype:
    """torch dtype of a resolved precision ("fp32" | "bf16")."""
    import torch

    return torch.bfloat16 if precision == "bf16" else torch.float32


def deepspeed_config(t: TrainConfig, world_size: int, device_type: str = "cpu",
                     precision: str | None = None) -> dict[str, Any]:
    """DeepSpeed config: AdamW (0.9, 0.95), wd 1e-3, clipping 1.0, ZeRO-`stage`, bf16/fp32.

    `precision` is the run's resolved precision (default: :func:`effective_precision`). On GPUs
    bf16 enables DeepSpeed's bf16 mode (bf16 weights and gradients, fp32 master weights and
    Adam states); on CPU DeepSpeed stays fp32 and bf16 is autocast around the forward
    (:class:`~pac.train.engine.PACObjective`), so weights and Adam states stay fp32 there too.
    """
    if t.zero_stage not in (0, 1, 2, 3):
        raise ConfigError(f"train.zero_stage={t.zero_stage!r}: DeepSpeed ZeRO stages are 0-3")
    if t.offload_optimizer and device_type != "cuda":
        raise ConfigError("train.offload_optimizer needs a GPU (it moves Adam states to CPU)")
    if t.offload_optimizer and t.zero_stage == 0:
        raise ConfigError("train.offload_optimizer needs train.zero_stage >= 1")
    layout = batch_layout(t, world_size)
    precision = precision or effective_precision(t, device_type)
    # memory_efficient_linear=False: with it, a ZeRO-3 engine replaces torch.nn.functional.linear
    # for the whole process and never restores it ("this will persist unless manually reset"),
    # so every later model in the process (a resumed run, evaluation) computes its linear layers
    # with a different kernel order: a resume after a ZeRO-3 run differed by 1.2e-4 in the
    # weights. The saving it buys (not keeping the input of a linear layer) is small next to the
    # activations of attention.
    zero: dict[str, Any] = {"stage": t.zero_stage, "memory_efficient_linear": False}
    if t.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
    return {
        "train_batch_size": layout.global_batch,
        "train_micro_batch_size_per_gpu": layout.micro_batch,
        "gradient_accumulation_steps": layout.accumulation,
        "gradient_clipping": t.grad_clip,
        "optimizer": {
            "type": "AdamW",
            "params": {
                "lr": t.lr_peak,
                "betas": [t.adam_beta1, t.adam_beta2],
                "eps": ADAM_EPS,
                "weight_decay": t.weight_decay,
                # torch's AdamW on CPU: no fused_adam JIT build; fused kernels on GPUs.
                "torch_adam": device_type != "cuda",
                # ... and torch's fused CPU kernel rather than its per-tensor loop (a tiny-model
                # step measured ~3x less CPU time: 42 vs 130 ms for 0.97M parameters)
                **({"fused": True} if device_type != "cuda" else {}),
            },
        },
        "zero_optimization": zero,
        "bf16": {"enabled": device_type == "cuda" and precision == "bf16"},
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }
