"""A tiny real inference checkpoint (random weights, real tokenizer) for the evaluation tests."""

from pathlib import Path

import torch

from pac.checkpoint import save_inference_checkpoint
from pac.config import load_config
from pac.data.tokenizer import TaskTokenizer
from pac.model import PerceiverActorCritic

TINY = [
    "model.d_z=32",
    "model.num_blocks=1",
    "model.num_latents=8",
    "model.d_i=16",
    "model.num_heads=2",
    "model.num_action_bins=11",
    "model.num_value_bins=11",
]


def tiny_checkpoint(root: Path, *overrides: str, horizons: dict[str, int] | None = None) -> Path:
    """A randomly initialised tiny PAC model saved as a real inference checkpoint (with the
    training data's per-task `horizons` when given, as `pac train` records them)."""
    cfg = load_config(overrides=[*TINY, *overrides])
    torch.manual_seed(0)
    model = PerceiverActorCritic(cfg.model)
    for name, p in model.named_parameters():  # the zero-initialised heads: non-uniform pi, Q
        if ".head." in name:
            p.data.add_(0.1 * torch.randn_like(p))
    TaskTokenizer.train(root / "spm.model", cfg.data.tokenizer_vocab)
    return save_inference_checkpoint(model, cfg, root / "policy", root / "spm.model", horizons)
