"""The DeepSpeed engine in every setting: one CPU process, or ranks started by a launcher.

* ``deepspeed --num_gpus N`` / ``torchrun --nproc_per_node N`` (and Metaflow's compute
  decorators, which run those launchers) set RANK / WORLD_SIZE / LOCAL_RANK / MASTER_*; a lone
  process gets rank 0 of 1 on a free local port. gloo on CPU, NCCL on GPUs.
* The engine wraps :class:`PACObjective`, the model plus the loss of eq. 11, so one engine
  forward is one loss evaluation and ZeRO's hooks see every sub-module the loss calls.
"""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import torch
from torch import nn

from pac.batch import Batch
from pac.config import PACConfig


def world_from_env() -> tuple[int, int, int]:
    """(rank, local rank, world size) as a launcher set them; (0, 0, 1) for a lone process."""
    return (
        int(os.environ.get("RANK", 0)),
        int(os.environ.get("LOCAL_RANK", 0)),
        int(os.environ.get("WORLD_SIZE", 1)),
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def device_type() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def extensions_dir() -> str:
    """torch's JIT-extension cache, one folder per DeepSpeed install path.

    The build files name the op's sources by path: two checkouts whose environments reach the
    same DeepSpeed by different paths (a linked `.venv`) share torch's default folder and
    rebuild the op (about 80 s of both cores) every time the other one ran; per-path folders
    build once each.
    """
    import hashlib

    import deepspeed
    from torch.utils.cpp_extension import get_default_build_root

    where = f"{Path(deepspeed.__file__).parent}|{torch.__version__}|{sys.version}"
    tag = hashlib.sha256(where.encode()).hexdigest()[:12]
    return str(Path(get_default_build_root()) / f"deepspeed-{tag}")


#: A first JIT build of a DeepSpeed op: deepspeed_shm_comm measured 28.5 s on 2 shared cores
#: (init_distributed, cold cache) against 3.8 s with the op cached; up to ~80 s on busy cores.
OP_BUILD_NOTE = "first use on this install, ~30-80 s on 2 cores"


def pending_op_build(builder_class: str) -> str | None:
    """The name of DeepSpeed's op `builder_class` (e.g. ``ShareMemCommBuilder``) when using it
    will JIT-build it now, else None: not when DeepSpeed skips it (no builder on this
    accelerator, incompatible), ships it prebuilt (``DS_BUILD_OPS``), or torch's extension cache
    (``$TORCH_EXTENSIONS_DIR/<name>/<name>.so``) already holds it; then it only loads."""
    import deepspeed
    from deepspeed.accelerator import get_accelerator
    from deepspeed.git_version_info import installed_ops

    builder = get_accelerator().create_op_builder(builder_class)
    if builder is None or not deepspeed.ops.__compatible_ops__.get(builder.name, False):
        return None
    if installed_ops.get(builder.name, False):
        return None
    root = Path(os.environ.get("TORCH_EXTENSIONS_DIR") or extensions_dir())
    return None if (root / builder.name / f"{builder.name}.so").is_file() else builder.name


def announce_op_build(builder_class: str, what: str) -> str | None:
    """Print one line before a DeepSpeed op JIT build (the only long silence of a start), on
    local rank 0 only; nothing when the op is cached or prebuilt. Returns the line printed."""
    name = pending_op_build(builder_class)
    if name is None or os.environ.get("LOCAL_RANK", "0") != "0":
        return None
    line = f"pac train: building DeepSpeed's {what} op {name} ({OP_BUILD_NOTE})..."
    print(line, flush=True)
    return line


def init_distributed(backend: str = "auto") -> torch.device:
    """Join (or create) the process group and return this rank's device."""
    import deepspeed
    import torch.distributed as dist

    if "RANK" not in os.environ:  # a lone process without a launcher
        os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1")
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", str(_free_port()))
    # DeepSpeed JIT-builds its CPU communication op with ninja: always the same ninja (the
    # environment's), or every switch between two ninjas forces a full rebuild.
    bindir = str(Path(sys.executable).parent)
    if (Path(bindir) / "ninja").exists() and not os.environ["PATH"].startswith(bindir):
        os.environ["PATH"] = f"{bindir}{os.pathsep}{os.environ['PATH']}"
    os.environ.setdefault("TORCH_EXTENSIONS_DIR", extensions_dir())
    if backend == "auto":
        backend = "nccl" if device_type() == "cuda" else "gloo"
    if not dist.is_initialized():
        # DeepSpeed's CPU accelerator JIT-builds its shared-memory comm op here
        announce_op_build("ShareMemCommBuilder", "CPU communication")
        deepspeed.init_distributed(dist_backend=backend)
    _, local_rank, _ = world_from_env()
    if device_type() == "cuda":
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


#: LossOutput.metrics names -> MLflow metric names (the others keep their names).
METRIC_NAMES = {
    "loss": "loss/total",
    "policy_improvement": "loss/policy_improvement",
    "bc": "loss/bc",
    "q_loss": "loss/q",
    "value_loss": "loss/value",
    "alpha_mean": "alpha",
    "beta_mean": "beta",
}


class PACObjective(nn.Module):
    """model + loss: ``forward(batch, target, step) -> (total loss, {metric: 0-d tensor})``.

    The loss is eq. 11 (eq. 14 for PAC+V). theta' is passed in, not registered, so DeepSpeed
    neither optimises nor partitions it. ZeRO-3's hooks see every tensor leaving the module
    (the metrics are detached: no backward hook). The samples a' ~ pi_theta' come from this
    rank's own generator (checkpointed with the run), so no other consumer of torch's global RNG
    can shift them: resume is exact. The metrics are detached device tensors (views of
    ``LossOutput.metric_values``): the trainer sums them on the device and reads them once per
    logging window, so an update never waits for the device to report them.

    `precision` "bf16" runs the forward (model and loss) under bf16 autocast on the
    generator's device: matmuls and attention in bf16, the weights (and, on CPU, the
    gradients and Adam states) stay fp32; the loss takes its softmaxes and cross-entropies in
    fp32 (``.float()``). The backward runs outside autocast, as autocast prescribes.
    """

    def __init__(self, model: nn.Module, cfg: PACConfig, generator: torch.Generator,
                 precision: str = "fp32") -> None:
        super().__init__()
        self.model = model
        self.loss_cfg = cfg.loss
        self.generator = generator
        self.precision = precision

    def forward(
        self, batch: Batch, target: nn.Module, step: int
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        from pac.losses import compute_loss

        with torch.autocast(self.generator.device.type, dtype=torch.bfloat16,
                            enabled=self.precision == "bf16"):
            out = compute_loss(self.model, target, batch, self.loss_cfg, step, self.generator)
        metrics = out.metric_tensors()
        return out.total.float(), {METRIC_NAMES.get(k, k): v for k, v in metrics.items()}


def build_engine(objective: PACObjective, cfg: PACConfig, world_size: int):
    """deepspeed.initialize: AdamW from the DeepSpeed config, the Table 12 schedule per update.

    The DeepSpeed config gets the objective's resolved precision, so an `auto` run is never
    measured twice (and a resumed run keeps the precision it started with).
    """
    import deepspeed
    from torch.optim.lr_scheduler import LambdaLR

    from pac.train.ds_config import deepspeed_config
    from pac.train.schedule import lr_factor

    factor = lr_factor(cfg.train)
    if device_type() == "cuda":  # on CPU the config asks for torch's AdamW: nothing to build
        if cfg.train.offload_optimizer:
            announce_op_build("CPUAdamBuilder", "CPU Adam")
        else:
            announce_op_build("FusedAdamBuilder", "fused Adam")
    engine, _, _, _ = deepspeed.initialize(
        model=objective,
        model_parameters=[p for p in objective.parameters() if p.requires_grad],
        config=deepspeed_config(cfg.train, world_size, device_type(), objective.precision),
        lr_scheduler=lambda optimizer: LambdaLR(optimizer, factor),
    )
    return engine
