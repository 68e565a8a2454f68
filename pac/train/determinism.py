"""What bit-exact resume depends on, checked instead of inherited from the process.

A training run is a pure function of (params, data, step) only if the arithmetic is the same
before and after a restart. Three things outside the params change it:

* **patched torch functions.** A DeepSpeed ZeRO-3 engine built with ``memory_efficient_linear``
  (DeepSpeed's default) replaces ``torch.nn.functional.linear`` for the whole process and never
  restores it; every later model in the same process then computes its linear layers with
  another kernel order (measured: a resume after a ZeRO-3 run in the same process differed from
  the uninterrupted run by 1.2e-4 in the weights). `pac.train.ds_config` turns that option off,
  and :func:`restore_torch_functions` undoes such a patch left by any earlier engine.
* **the intra-op thread count**, which sets the reduction order of CPU matmuls;
* **the world size**, which sets how the batch is split and all-reduced.

The checkpoint records them (:func:`environment`); a resume under different values continues
correctly (same data stream, same optimiser state) but is not bit-identical, and says so.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F

#: The functions whose identity the trainer checks, with the originals they must be.
_ORIGINALS = {"linear": torch._C._nn.linear}


def restore_torch_functions() -> list[str]:
    """Put back torch.nn.functional functions that an earlier library call replaced; returns
    their names (each also reported as a warning)."""
    restored = []
    for name, original in _ORIGINALS.items():
        if getattr(F, name) is not original:
            setattr(F, name, original)
            restored.append(name)
    if restored:
        warnings.warn(
            f"pac train: torch.nn.functional.{', '.join(restored)} had been replaced in this"
            " process (e.g. by an earlier DeepSpeed ZeRO-3 engine); restored the originals so"
            " the run does not depend on what ran before it",
            stacklevel=2,
        )
    return restored


def environment(world_size: int, precision: str, device: str) -> dict[str, object]:
    """The settings outside the params that bit-exact resume needs to be equal."""
    import deepspeed

    return {
        "world_size": world_size,
        "num_threads": torch.get_num_threads(),
        "precision": precision,
        "device": device,
        "torch": torch.__version__,
        "deepspeed": deepspeed.__version__,
    }


def differences(saved: dict[str, object], current: dict[str, object]) -> list[str]:
    """'key: saved -> current' for every recorded setting that differs."""
    return [
        f"{k}: {saved[k]!r} -> {current.get(k)!r}"
        for k in sorted(saved)
        if saved[k] != current.get(k)
    ]
