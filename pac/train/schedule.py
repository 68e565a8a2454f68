"""The learning-rate schedule of Table 12 / App. C.5 and the model card's variant.

lr_init -> linear warm-up over `warmup` updates -> lr_peak -> cosine annealing to lr_end over
`decay` updates -> lr_end. The paper warms up for 1.5e4 updates and decays over ~one epoch
(2.7e6 updates); the model card warms up over the first 5% of updates (`train.warmup_fraction`)
and decays until the end of training (`train.decay_steps: 0`).
"""

from __future__ import annotations

import math

from pac.config import ConfigError, TrainConfig


def warmup_steps(t: TrainConfig) -> int:
    """Number of linear warm-up updates: explicit, else `warmup_fraction` of all updates."""
    return t.warmup_steps if t.warmup_steps > 0 else int(round(t.warmup_fraction * t.steps))


def decay_steps(t: TrainConfig) -> int:
    """Number of cosine-annealing updates after warm-up (0 in params = until `train.steps`)."""
    return t.decay_steps if t.decay_steps > 0 else max(t.steps - warmup_steps(t), 1)


def learning_rate(step: int, t: TrainConfig) -> float:
    """Learning rate used by update number `step` (0-based)."""
    warm = warmup_steps(t)
    if step < warm:
        return t.lr_init + (t.lr_peak - t.lr_init) * step / warm
    progress = min((step - warm) / decay_steps(t), 1.0)
    return t.lr_end + 0.5 * (t.lr_peak - t.lr_end) * (1.0 + math.cos(math.pi * progress))


def lr_factor(t: TrainConfig):
    """``step -> learning_rate(step) / lr_peak`` for torch's LambdaLR (base lr = lr_peak)."""
    if t.lr_peak <= 0:
        raise ConfigError(f"train.lr_peak={t.lr_peak!r} must be > 0 to train")
    return lambda step: learning_rate(step, t) / t.lr_peak
