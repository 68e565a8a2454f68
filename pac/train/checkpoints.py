"""Training checkpoints for exact resume: ``<out_dir>/checkpoints/step_XXXXXXXX/``.

A checkpoint holds everything the next update depends on:

* DeepSpeed's engine state (``engine.save_checkpoint``): weights, AdamW moments, LR-scheduler
  position, with ``client_state = {step, sampler_step}``; the sampler is a pure function of the
  step, so its position is the step number.
* ``target.safetensors``: theta' (written by rank 0; identical on every rank).
* ``rng_rank<r>.json``: every rank's generator of the loss (a' ~ pi_theta') and its torch /
  numpy / python RNG states; kept per rank because DeepSpeed stores its client state from
  rank 0 only below ZeRO-3.
* ``environment.json``: world size, thread count, precision, device and versions
  (:mod:`pac.train.determinism`); a resume under other values is correct but not bit-exact and
  warns.
* ``manifest.json``: SHA-256 of every file, written last. A checkpoint without a manifest (a
  crash during the save) or whose files do not match it is never loaded: resume picks the newest
  complete one and moves rejected ones to ``checkpoints/quarantine/``. Only files the manifest
  vouches for reach DeepSpeed's loader.

A full disk during a save removes the partial folder and raises :class:`DiskFullError`: an
``OSError(errno.ENOSPC)`` from the project's own writers (:func:`pac.io.write_chunk`), or a
failure of DeepSpeed's ``torch.save`` on a filesystem with less room left than the previous
checkpoint takes (torch's writer reports a full disk as a ``RuntimeError`` without errno,
measured on a 1 MiB tmpfs: ``unexpected pos 576 vs 534``). The previous complete checkpoint is
untouched (older ones are deleted only after a newer one is complete), so ``--resume`` continues
from it once space is freed.
"""

from __future__ import annotations

import base64
import errno
import json
import random
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes
from torch import nn

from pac.io import atomic_write, atomic_write_text, sha256_file

MANIFEST = "manifest.json"
TARGET = "target.safetensors"
QUARANTINE = "quarantine"
#: Complete checkpoints kept on disk (older ones are deleted after a newer one is complete).
KEEP = 3


def tag(step: int) -> str:
    return f"step_{step:08d}"


class DiskFullError(RuntimeError):
    """The disk filled up during a checkpoint save; the message names the checkpoint that is
    intact (the one a resume continues from)."""

    def __init__(self, step: int, previous: Path | None):
        self.step, self.previous = step, previous
        kept = (f"the previous checkpoint {previous.name} is intact; free space and resume with"
                " --resume" if previous is not None else
                "no earlier checkpoint exists; free space and start the run again")
        super().__init__(f"disk full while writing checkpoint {tag(step)}: {kept}")


# --- RNG states ----------------------------------------------------------------------------------


def _b64(t: torch.Tensor) -> str:
    return base64.b64encode(t.cpu().numpy().tobytes()).decode()


def _tensor(text: str) -> torch.Tensor:
    return torch.from_numpy(np.frombuffer(base64.b64decode(text), dtype=np.uint8).copy())


def rng_state(generator: torch.Generator) -> dict:
    """The loss's generator and the torch (CPU, CUDA), numpy and python RNG states (JSON)."""
    np_state = np.random.get_state()
    state = {
        "generator": _b64(generator.get_state()),
        "torch": _b64(torch.get_rng_state()),
        "numpy": [np_state[0], np_state[1].tolist(), *map(float, np_state[2:])],
        "python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
    }
    if torch.cuda.is_available():
        state["cuda"] = [_b64(s) for s in torch.cuda.get_rng_state_all()]
    return state


def set_rng_state(state: dict, generator: torch.Generator) -> None:
    generator.set_state(_tensor(state["generator"]))
    torch.set_rng_state(_tensor(state["torch"]))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), int(pos), int(has_gauss),
                         cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([_tensor(s) for s in state["cuda"]])


# --- manifest ------------------------------------------------------------------------------------




def write_manifest(ckpt_dir: Path, step: int) -> None:
    files = sorted(p for p in ckpt_dir.rglob("*") if p.is_file() and p.name != MANIFEST)
    entries = {str(p.relative_to(ckpt_dir)): sha256_file(p) for p in files}
    atomic_write_text(ckpt_dir / MANIFEST, json.dumps({"step": step, "files": entries}, indent=1))


def verify(ckpt_dir: Path) -> str | None:
    """None when the checkpoint is complete and intact, else the reason it is not."""
    manifest = ckpt_dir / MANIFEST
    if not manifest.is_file():
        return "no manifest (the save did not finish)"
    try:
        entries = json.loads(manifest.read_text())["files"]
    except (ValueError, KeyError) as exc:
        return f"unreadable manifest: {exc}"
    for rel, digest in entries.items():
        path = ckpt_dir / rel
        if not path.is_file():
            return f"missing file {rel}"
        if sha256_file(path) != digest:
            return f"file {rel} does not match its SHA-256"
    return None


@dataclass
class Found:
    """The newest complete checkpoint (None if there is none) and the folders skipped on the way."""

    path: Path | None
    step: int
    rejected: list[tuple[Path, str]]


def find_latest(root: Path) -> Found:
    rejected: list[tuple[Path, str]] = []
    for path in sorted(root.glob("step_*"), reverse=True) if root.is_dir() else []:
        reason = verify(path)
        if reason is None:
            return Found(path, int(path.name.split("_")[1]), rejected)
        rejected.append((path, reason))
    return Found(None, 0, rejected)


def quarantine(root: Path, rejected: list[tuple[Path, str]]) -> list[Path]:
    """Move rejected checkpoint folders out of the way (nothing is deleted)."""
    moved = []
    for path, reason in rejected:
        dest = root / QUARANTINE / path.name
        dest.parent.mkdir(parents=True, exist_ok=True)
        if dest.exists():
            shutil.rmtree(dest)
        path.rename(dest)
        atomic_write_text(dest.with_name(dest.name + ".reason.txt"), reason + "\n")
        moved.append(dest)
    return moved


# --- save / load ---------------------------------------------------------------------------------


ENVIRONMENT = "environment.json"


def save(
    engine, root: Path, step: int, target: nn.Module, rank: int, generator: torch.Generator,
    environment: dict | None = None,
) -> Path:
    """Collective: every rank calls it. Returns the checkpoint folder."""
    import torch.distributed as dist

    ckpt = root / tag(step)
    try:
        engine.save_checkpoint(str(root), tag=tag(step),
                               client_state={"step": step, "sampler_step": step})
        atomic_write_text(ckpt / f"rng_rank{rank}.json", json.dumps(rng_state(generator)))
        if rank == 0:
            state = {k: v.detach().cpu().contiguous() for k, v in target.state_dict().items()}
            atomic_write(ckpt / TARGET, lambda fh: fh.write(safetensors_bytes(state)))
            if environment is not None:
                atomic_write_text(ckpt / ENVIRONMENT, json.dumps(environment, indent=1))
        dist.barrier()
        if rank == 0:
            write_manifest(ckpt, step)
    except (OSError, RuntimeError) as exc:
        complete = [p for p in sorted(root.glob("step_*")) if (p / MANIFEST).is_file()]
        previous = complete[-1] if complete else None
        if not _disk_full(exc, root, previous):
            raise
        shutil.rmtree(ckpt, ignore_errors=True)  # never complete: no manifest vouches for it
        raise DiskFullError(step, previous) from exc
    if rank == 0:
        complete = [p for p in sorted(root.glob("step_*")) if (p / MANIFEST).is_file()]
        for old in complete[:-KEEP]:
            shutil.rmtree(old)
    dist.barrier()
    return ckpt


def _disk_full(exc: BaseException, root: Path, previous: Path | None) -> bool:
    """ENOSPC, or torch's writer failing where less room is left than a checkpoint takes."""
    if isinstance(exc, OSError):
        return exc.errno == errno.ENOSPC
    if "inline_container" not in str(exc) and "PytorchStreamWriter" not in str(exc):
        return False
    need = (sum(p.stat().st_size for p in previous.rglob("*") if p.is_file())
            if previous is not None else 1 << 20)
    return shutil.disk_usage(root).free < need


def load(
    engine, found: Found, target: nn.Module, rank: int, generator: torch.Generator,
    environment: dict | None = None,
) -> int:
    """Restore engine, theta' and this rank's RNG states; returns the step to continue from.
    With `environment` (this process's), a checkpoint written under other settings warns that
    the continuation is not bit-exact."""
    path = found.path
    saved = path / ENVIRONMENT
    if environment is not None and saved.is_file():
        from pac.train.determinism import differences

        changed = differences(json.loads(saved.read_text()), environment)
        if changed and rank == 0:
            warnings.warn(
                f"pac train: resuming {path} under other settings ({'; '.join(changed)}):"
                " the run continues correctly but is not bit-identical to an uninterrupted one",
                stacklevel=2,
            )
    _, client = engine.load_checkpoint(str(path.parent), tag=path.name)
    if client is None:
        raise RuntimeError(f"DeepSpeed could not load the checkpoint {path}")
    target.load_state_dict(load_file(str(path / TARGET), device="cpu"))
    rng = path / f"rng_rank{rank}.json"
    if not rng.is_file():
        raise RuntimeError(
            f"{path} has no RNG state for rank {rank}: it was written with a different world size"
        )
    set_rng_state(json.loads(rng.read_text()), generator)
    return int(client["step"])
