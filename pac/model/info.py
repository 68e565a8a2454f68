"""Parameter counts per scale (Table 4), from the model itself built on the meta device.

Paper scales use their preset (`params/presets/<scale>.yaml`: Table 5's input format); `tiny`
uses `params/default.yaml` (the laptop format). Nothing is allocated: counting L or card15B
takes milliseconds.
"""

from __future__ import annotations

from typing import Any

import torch

from pac.config import REPO_ROOT, SCALES, ModelConfig, load_config

PRESETS = REPO_ROOT / "params" / "presets"


def scale_config(scale: str) -> ModelConfig:
    """The model config of a named scale: its preset if one exists, else the default params."""
    preset = PRESETS / f"{scale}.yaml"
    if preset.exists():
        return load_config(preset).model
    return load_config(overrides=[f"model.scale={scale}"]).model


def input_tokens(cfg: ModelConfig) -> int:
    """N = N^P N_G + (N^V + N_tau^V) N_E + N_tau^L (App. B.2; 2634 with Table 5's format)."""
    n_e = (cfg.image_size // 2 ** len(cfg.resnet_channels)) ** 2
    return (
        cfg.num_proprio * cfg.num_gains
        + (cfg.num_images + cfg.num_goal_images) * n_e
        + cfg.num_text_tokens
    )


def model_info(cfg: ModelConfig) -> dict[str, Any]:
    """{"scale", "params", "paper_params", "rel_diff", sizes, per-component counts}."""
    from pac.model import PerceiverActorCritic

    with torch.device("meta"):
        model = PerceiverActorCritic(cfg)
    params = sum(p.numel() for p in model.parameters())
    paper = SCALES[cfg.scale]["paper_params"]
    return {
        "scale": cfg.scale,
        "params": params,
        "paper_params": paper or None,
        "rel_diff": (params / paper - 1) if paper else None,
        "d_z": cfg.d_z,
        "num_blocks": cfg.num_blocks,
        "widening": cfg.widening,
        "decoder_widening": cfg.decoder_widening,
        "q_decoder_widening": cfg.q_decoder_widening,
        "input_tokens": input_tokens(cfg),
        "components": {
            name: sum(p.numel() for p in child.parameters())
            for name, child in model.named_children()
        },
    }


def format_table(rows: list[dict[str, Any]]) -> str:
    """A readable table of model_info rows."""
    lines = [
        f"{'scale':<8} {'params':>15} {'paper':>15} {'diff':>7} {'D_Z':>5} {'M':>3} {'W':>2}"
        f" {'tokens':>6}"
    ]
    for r in rows:
        paper = f"{r['paper_params']:,}" if r["paper_params"] else "-"
        diff = f"{100 * r['rel_diff']:+.1f}%" if r["rel_diff"] is not None else "-"
        lines.append(
            f"{r['scale']:<8} {r['params']:>15,} {paper:>15} {diff:>7} {r['d_z']:>5}"
            f" {r['num_blocks']:>3} {r['widening']:>2} {r['input_tokens']:>6}"
        )
    return "\n".join(lines)
