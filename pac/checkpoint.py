"""Inference checkpoints: the plain, pickle-free policy files that evaluation and RLFT load.

Layout of a checkpoint directory::

    model.safetensors   # PerceiverActorCritic weights (safetensors: no code is executed on load)
    config.yaml         # the resolved PACConfig the model was trained with
    tokenizer.model     # the SentencePiece model of the task instructions (optional)
    horizons.json       # {task: episode length} of the training data (optional): the horizon
                        # evaluation runs each task over (docs/rollout_format.md)
    tasks.json          # {task: instruction, action_low, action_high} of the params' tasks: the
                        # action normalisation the policy was trained with, so serving maps its
                        # [-1, 1] bins to the robot's units without the params (pac.tasks)

The directory is written next to its final place and renamed into it, so a reader never sees a
half-written checkpoint.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import torch
import yaml
from safetensors.torch import load_file, save_file

from pac.config import PACConfig, config_from_dict

WEIGHTS = "model.safetensors"
CONFIG = "config.yaml"
TOKENIZER = "tokenizer.model"
HORIZONS = "horizons.json"
TASK_TABLE = "tasks.json"


def save_inference_checkpoint(
    model: torch.nn.Module,
    cfg: PACConfig,
    out_dir: str | Path,
    tokenizer_path: str | Path | None = None,
    horizons: dict[str, int] | None = None,
) -> Path:
    """Write weights + resolved config (+ tokenizer, + the training data's per-task horizons,
    :func:`pac.data.version.task_horizons`) to `out_dir`, replacing it atomically."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
        save_file(state, str(tmp / WEIGHTS))
        (tmp / CONFIG).write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        if tokenizer_path is not None:
            shutil.copyfile(tokenizer_path, tmp / TOKENIZER)
        if horizons is not None:
            _check_horizons(horizons, tmp / HORIZONS)
            (tmp / HORIZONS).write_text(json.dumps(dict(sorted(horizons.items())), indent=1))
        (tmp / TASK_TABLE).write_text(json.dumps(task_table(cfg), indent=1))
        old = out_dir.with_name(f".{out_dir.name}.old")
        if out_dir.exists():
            shutil.rmtree(old, ignore_errors=True)
            out_dir.rename(old)
        tmp.rename(out_dir)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def task_table(cfg: PACConfig) -> dict[str, dict]:
    """{task: instruction, action_low, action_high} of every task the params name (training,
    held-out and RLFT tasks, the declared ones)."""
    from pac.tasks import TASKS

    names = [t for g in cfg.data.groups for t in g.tasks]
    names += [*cfg.eval.held_out_tasks, *cfg.rlft.tasks, *cfg.tasks]
    return {t: {"instruction": TASKS[t].instruction, "action_low": list(TASKS[t].action_low),
                "action_high": list(TASKS[t].action_high)} for t in sorted(set(names))}


def load_task_table(ckpt_dir: str | Path) -> dict[str, dict]:
    """The checkpoint's task table ({} for a checkpoint written before it was recorded)."""
    path = Path(ckpt_dir) / TASK_TABLE
    if not path.is_file():
        return {}
    table = _read_json(path)
    ok = isinstance(table, dict) and all(
        isinstance(v, dict) and isinstance(v.get("instruction"), str)
        and all(isinstance(v.get(k), list) and all(isinstance(x, (int, float)) for x in v[k])
                for k in ("action_low", "action_high"))
        for v in table.values())
    if not ok:
        raise ValueError(f"{path}: expected {{task: {{instruction, action_low, action_high}}}}")
    return table


def load_checkpoint_config(ckpt_dir: str | Path) -> PACConfig:
    """The validated PACConfig stored with a checkpoint."""
    path = Path(ckpt_dir) / CONFIG
    if not path.is_file():
        raise FileNotFoundError(f"{ckpt_dir}: not an inference checkpoint (no {CONFIG})")
    return config_from_dict(yaml.safe_load(path.read_text()) or {})


def _check_horizons(horizons: object, where: Path) -> dict[str, int]:
    if not isinstance(horizons, dict) or not all(
        isinstance(t, str) and isinstance(n, int) and not isinstance(n, bool) and n >= 1
        for t, n in horizons.items()
    ):
        raise ValueError(f"{where}: expected {{task: episode steps >= 1}}, got {horizons!r:.200}")
    return horizons


def load_checkpoint_horizons(ckpt_dir: str | Path) -> dict[str, int]:
    """{task: episode length} of the data the checkpoint was trained on ({} when not recorded,
    e.g. a checkpoint written before horizons were recorded)."""
    path = Path(ckpt_dir) / HORIZONS
    return _check_horizons(_read_json(path), path) if path.is_file() else {}


def _read_json(path: Path) -> object:
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not a JSON file ({exc})") from exc


def load_inference_checkpoint(
    ckpt_dir: str | Path, device: str | torch.device = "cpu"
) -> tuple[torch.nn.Module, PACConfig, Path | None]:
    """Load (model in eval mode, config, tokenizer path or None) from a checkpoint directory."""
    from pac.model import PerceiverActorCritic

    ckpt_dir = Path(ckpt_dir)
    cfg = load_checkpoint_config(ckpt_dir)
    weights = ckpt_dir / WEIGHTS
    if not weights.is_file():
        raise FileNotFoundError(f"{ckpt_dir}: missing {WEIGHTS}")
    model = PerceiverActorCritic(cfg.model)
    model.load_state_dict(load_file(str(weights), device=str(device)))
    model.to(device).eval()
    tokenizer = ckpt_dir / TOKENIZER
    return model, cfg, tokenizer if tokenizer.is_file() else None
