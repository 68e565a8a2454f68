"""Random batches in the padded input format (App. B.2) for smoke tests and benchmarks.

Each sample gets a random number of valid proprioception entries, action dimensions, text tokens
and images (at least one of each); the rest is padding filled with `pad_value`, which the model
must ignore.
"""

from __future__ import annotations

import torch

from pac.batch import Batch
from pac.config import ModelConfig


def _prefix_mask(lengths: torch.Tensor, size: int) -> torch.Tensor:
    return torch.arange(size)[None, :] < lengths[:, None]


def random_batch(
    cfg: ModelConfig, batch_size: int, length: int, seed: int = 0, pad_value: float = 0.0
) -> Batch:
    """B trajectories of length T with random contents; padding entries set to `pad_value`."""
    g = torch.Generator().manual_seed(seed)
    b, t = batch_size, length

    def lengths(n: int) -> torch.Tensor:
        return torch.randint(1, n + 1, (b,), generator=g) if n else torch.zeros(b, dtype=torch.long)

    proprio_mask = _prefix_mask(lengths(cfg.num_proprio), cfg.num_proprio)
    action_mask = _prefix_mask(lengths(cfg.num_actions), cfg.num_actions)
    text_mask = _prefix_mask(lengths(cfg.num_text_tokens), cfg.num_text_tokens)
    proprio = torch.randn(b, t, cfg.num_proprio, generator=g) * 3.0
    proprio = torch.where(proprio_mask[:, None], proprio, torch.full_like(proprio, pad_value))
    actions = torch.rand(b, t, cfg.num_actions, generator=g) * 2 - 1
    actions = torch.where(action_mask[:, None], actions, torch.full_like(actions, pad_value))
    text = torch.randint(1, cfg.vocab_size, (b, cfg.num_text_tokens), generator=g)
    text = torch.where(text_mask, text, torch.full_like(text, int(pad_value)))
    images = image_mask = goal_images = goal_mask = None
    side = cfg.image_size
    if cfg.num_images:
        image_mask = _prefix_mask(lengths(cfg.num_images), cfg.num_images)
        images = torch.randint(0, 256, (b, t, cfg.num_images, side, side, 3), generator=g)
        images = (images * image_mask[:, None, :, None, None, None]).to(torch.uint8)
    if cfg.num_goal_images:
        goal_mask = _prefix_mask(lengths(cfg.num_goal_images), cfg.num_goal_images)
        goal_images = torch.randint(0, 256, (b, cfg.num_goal_images, side, side, 3), generator=g)
        goal_images = (goal_images * goal_mask[:, :, None, None, None]).to(torch.uint8)
    return Batch(
        proprio=proprio,
        proprio_mask=proprio_mask,
        text=text,
        text_mask=text_mask,
        actions=actions,
        action_mask=action_mask,
        rewards=torch.rand(b, t, generator=g),
        discounts=torch.ones(b, t),
        step_mask=torch.ones(b, t, dtype=torch.bool),
        alpha=torch.full((b,), 0.75),
        beta=torch.full((b,), 1.0),
        group=torch.zeros(b, dtype=torch.long),
        images=images,
        image_mask=image_mask,
        goal_images=goal_images,
        goal_mask=goal_mask,
    )
