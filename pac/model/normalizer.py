"""The multi-scale normaliser (App. B.1, eq. 15): phi(x) = [tanh(sigma_1 x), ..., tanh(sigma_NG x)].

N_G fixed gains on a log scale (1e-4 ... 1e3 for N_G = 8) map a float of any magnitude to N_G
bounded features; attention then picks the useful scales. No parameters and no buffers: the gains
are rebuilt in float32 on every call (8 numbers), so bf16 weights never round them.
"""

from __future__ import annotations

import torch
from torch import nn


class MultiScaleNormalizer(nn.Module):
    """R -> [-1, 1]^{N_G}: ``x [...]`` -> ``[..., N_G]`` (float32)."""

    def __init__(self, num_gains: int = 8, min_exponent: float = -4.0, max_exponent: float = 3.0):
        super().__init__()
        self.num_gains = num_gains
        self.min_exponent = min_exponent
        self.max_exponent = max_exponent if num_gains > 1 else min_exponent

    def gains(self, device: torch.device | None = None) -> torch.Tensor:
        return torch.logspace(
            self.min_exponent, self.max_exponent, self.num_gains, device=device,
            dtype=torch.float32,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x.float().unsqueeze(-1) * self.gains(x.device))
