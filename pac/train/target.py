"""The target network theta' (§3.2, App. A.2): a time-lagged copy of the online weights.

theta' is a plain module kept outside the DeepSpeed engine (DeepSpeed neither optimises nor
partitions it), in eval mode without gradients, in the training precision; the loss only runs
it forward. It is refreshed
theta' <- theta after every f_theta'-th update (`loss.target_update_period`, 100 in the paper).
Under ZeRO-3 the online parameters are partitioned across ranks, so each sub-module's
parameters are gathered with ``deepspeed.zero.GatheredParameters`` before they are copied: one
sub-module at a time, so at most one layer is gathered at once, never the whole model.

What the run evaluates and exports is theta as the optimiser holds it, fp32
(:func:`copy_master_weights`), not theta' or the module's bf16 copy under DeepSpeed's bf16 mode.
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


def _flat_group_masters(optimizer: object) -> dict[int, torch.Tensor]:
    """{id(param): its fp32 master} of an optimiser wrapper that keeps one flat fp32 tensor per
    group of bf16 parameters (DeepSpeed's bf16 mode at ZeRO-0); empty for any other optimiser."""
    groups = getattr(optimizer, "fp16_groups", None)
    flats = getattr(optimizer, "fp32_groups_flat", None)
    if not groups or not flats or len(groups) != len(flats):
        return {}
    from torch._utils import _unflatten_dense_tensors

    return {id(p): m for group, flat in zip(groups, flats, strict=True)
            for p, m in zip(group, _unflatten_dense_tensors(flat, group), strict=True)}


@torch.no_grad()
def copy_master_weights(engine: object, dst: nn.Module | None) -> None:
    """dst <- theta in fp32, as the optimiser holds it: what periodic evaluation scores and the
    run exports are then the weights training continues from and a resume restores.

    Where DeepSpeed keeps fp32 master weights apart from the module's bf16 ones (bf16 mode on
    GPUs) they are read from the optimiser (ZeRO 1-3 and its bf16 optimiser through
    ``safe_get_full_fp32_param``, ZeRO-0 through its flat fp32 groups); elsewhere the module's
    parameters are fp32 themselves (CPU runs: bf16 is autocast). A bf16 module would otherwise
    export theta rounded to 8 mantissa bits. Every rank must call it (the masters are gathered
    collectively); `dst` is None on ranks that keep nothing.
    """
    from deepspeed.utils import safe_get_full_fp32_param

    model = engine.module.model  # type: ignore[attr-defined]
    masters = _flat_group_masters(getattr(engine, "optimizer", None))
    dst_params = dict(dst.named_parameters()) if dst is not None else {}
    for name, p in model.named_parameters():
        master = masters.get(id(p))
        if master is None:
            master = safe_get_full_fp32_param(p)
        if master is None:
            master = p
        if dst is not None:
            dst_params[name].copy_(master.reshape(dst_params[name].shape))
    if dst is not None:
        dst_buffers = dict(dst.named_buffers())
        for name, b in model.named_buffers():
            dst_buffers[name].copy_(b)
