"""The DeepSpeed configuration built from params (Table 12 optimiser, ZeRO stage, precision).

One function turns a validated :class:`~pac.config.TrainConfig` plus the world size and device
into DeepSpeed's JSON config. Settings that cannot run (a ZeRO stage DeepSpeed lacks, a batch
that does not split over the ranks) raise :class:`~pac.config.ConfigError` before any compute.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pac.config import ConfigError, TrainConfig

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


def effective_precision(t: TrainConfig, device_type: str) -> str:
    """bf16 on GPUs when asked for; always fp32 on CPU (no bf16 matmul speed-up there)."""
    return t.precision if device_type == "cuda" else "fp32"


def deepspeed_config(t: TrainConfig, world_size: int, device_type: str = "cpu") -> dict[str, Any]:
    """DeepSpeed config: AdamW (0.9, 0.95), wd 1e-3, clipping 1.0, ZeRO-`stage`, bf16/fp32."""
    if t.zero_stage not in (0, 1, 2, 3):
        raise ConfigError(f"train.zero_stage={t.zero_stage!r}: DeepSpeed ZeRO stages are 0-3")
    if t.offload_optimizer and device_type != "cuda":
        raise ConfigError("train.offload_optimizer needs a GPU (it moves Adam states to CPU)")
    if t.offload_optimizer and t.zero_stage == 0:
        raise ConfigError("train.offload_optimizer needs train.zero_stage >= 1")
    layout = batch_layout(t, world_size)
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
            },
        },
        "zero_optimization": zero,
        "bf16": {"enabled": effective_precision(t, device_type) == "bf16"},
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }
