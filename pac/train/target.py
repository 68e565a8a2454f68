"""The target network theta' (§3.2, App. A.2): a time-lagged copy of the online weights.

theta' is a plain module kept outside the DeepSpeed engine (DeepSpeed neither optimises nor
partitions it), in eval mode without gradients, in the training precision; the loss only runs
it forward. It is refreshed
theta' <- theta after every f_theta'-th update (`loss.target_update_period`, 100 in the paper).
Under ZeRO-3 the online parameters are partitioned across ranks, so each sub-module's
parameters are gathered with ``deepspeed.zero.GatheredParameters`` before they are copied: one
sub-module at a time, so at most one layer is gathered at once, never the whole model.
"""

from __future__ import annotations

from collections.abc import Callable

import deepspeed
import torch
from torch import nn


def make_target(build: Callable[[], nn.Module], device: torch.device,
                dtype: torch.dtype) -> nn.Module:
    """An empty theta' of the architecture `build()` makes, directly on `device` in `dtype`.

    Built on the meta device and materialised uninitialised (no full fp32 copy ever exists, on
    the host or the GPU); :func:`refresh_target` fills it from the engine right after.
    """
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device("meta"):
            target = build()
    finally:
        torch.set_default_dtype(previous)
    target = target.to_empty(device=device)
    target.requires_grad_(False)
    return target.eval()


def is_target_update(step: int, period: int) -> bool:
    """True after every `period`-th update (updates count from 0)."""
    return (step + 1) % period == 0


@torch.no_grad()
def refresh_target(model: nn.Module, target: nn.Module) -> None:
    """theta' <- theta, by name; ZeRO-3 partitions are gathered per sub-module (no-op below)."""
    target_modules = dict(target.named_modules())
    for name, module in model.named_modules():
        dst = target_modules[name]
        params = list(module.parameters(recurse=False))
        with deepspeed.zero.GatheredParameters(params, modifier_rank=None):
            for pname, p in module.named_parameters(recurse=False):
                getattr(dst, pname).copy_(p)
        for bname, b in module.named_buffers(recurse=False):
            getattr(dst, bname).copy_(b)
