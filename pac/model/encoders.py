"""Input adapters, one per modality (App. B.2), and the action encoder phi^A (App. B.4).

Each encoder returns tokens of width D_I and a token mask (True = valid). Padded entries are
replaced by zeros *before* encoding and their tokens are zeroed *after* it, and the Perceiver
masks them out of attention: padded values can never influence any output.
"""

from __future__ import annotations

import torch
from torch import nn

from pac.config import PROPRIO_TOKENS
from pac.model.normalizer import MultiScaleNormalizer


def _embedding(*shape: int) -> nn.Parameter:
    return nn.Parameter(torch.randn(*shape) * 0.02)


class ProprioEncoder(nn.Module):
    """phi^P = L^P . phi^multi-scale: each of the N^P scalars -> N_G tokens of width D_I.

    L^P projects token g (the scalar tanh(sigma_g x)) with its own weight and bias; a learned
    position embedding per proprioceptive index tells the scalars apart.

    ``tokens`` (``model.proprio_tokens``): ``scalar`` is App. B.2's encoder above (the default);
    ``joint`` replaces those N^P*N_G tokens by one, an MLP (N^P*N_G -> 4 D_I -> D_I, ReLU) over
    all the multi-scale features; ``both`` appends that token to the scalar ones. The joint
    token is not the paper's: an option because it helped reacher.easy's behaviour cloning but
    not the default PAC run, so the default stays App. B.2's (BENCHMARKS.md, "Reacher and the
    Perceiver's proprio tokens").
    """

    def __init__(self, num_proprio: int, num_gains: int, d_i: int,
                 tokens: str = "scalar") -> None:
        super().__init__()
        if tokens not in PROPRIO_TOKENS:
            raise ValueError(f"tokens must be one of {PROPRIO_TOKENS}, got {tokens!r}")
        self.tokens = tokens
        self.normalizer = MultiScaleNormalizer(num_gains)
        self.weight = _embedding(num_gains, d_i)
        self.bias = nn.Parameter(torch.zeros(num_gains, d_i))
        self.position = _embedding(num_proprio, 1, d_i)
        self.joint = (
            nn.Sequential(nn.Linear(num_proprio * num_gains, 4 * d_i), nn.ReLU(),
                          nn.Linear(4 * d_i, d_i))
            if tokens != "scalar" else None
        )

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x [B, N^P] float, mask [B, N^P] -> tokens [B, N, D_I], mask [B, N]: N = N^P*N_G
        scalar tokens, then (joint, both) the joint token."""
        # [B, N^P, N_G]; exactly zero where padded (tanh(0)), so padding never reaches the MLP
        features = self.normalizer(x.masked_fill(~mask, 0.0)).to(self.weight.dtype)
        parts = []
        if self.tokens != "joint":
            tokens = features.unsqueeze(-1) * self.weight + self.bias + self.position
            tokens = tokens * mask[..., None, None]
            b, n, g, d = tokens.shape
            parts.append((tokens.reshape(b, n * g, d), mask.repeat_interleave(g, dim=1)))
        if self.joint is not None:
            valid = mask.any(-1, keepdim=True)  # [B, 1]
            parts.append((self.joint(features.flatten(1))[:, None] * valid[..., None], valid))
        if len(parts) == 1:
            return parts[0]
        return torch.cat([t for t, _ in parts], 1), torch.cat([m for _, m in parts], 1)


class ResidualUnit(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(torch.relu(self.conv1(torch.relu(x))))


class ResNetStage(nn.Module):
    """conv 3x3 -> max-pool 3x3 stride 2 -> two residual units (halves the resolution)."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.pool = nn.MaxPool2d(3, stride=2, padding=1)
        self.res = nn.Sequential(ResidualUnit(c_out), ResidualUnit(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.res(self.pool(self.conv(x)))


class ImageEncoder(nn.Module):
    """phi^V: ResNet of three stages (32, 64, 64 channels, App. C.3): 80x80 -> 10x10 = N_E = 100
    continuous tokens per image, each projected to D_I.

    One encoder serves observation images s^V and goal images tau^V; a learned slot embedding
    (one per image position of the padded format) and a spatial embedding tell them apart.
    """

    def __init__(self, channels: list[int], image_size: int, num_slots: int, d_i: int) -> None:
        super().__init__()
        c_in = 3
        stages = []
        for c in channels:
            stages.append(ResNetStage(c_in, c))
            c_in = c
        self.resnet = nn.Sequential(*stages)
        side = image_size // 2 ** len(channels)
        self.tokens_per_image = side * side  # N_E
        self.proj = nn.Linear(c_in, d_i)
        self.spatial = _embedding(1, self.tokens_per_image, d_i)
        self.slot = _embedding(num_slots, 1, d_i)

    def forward(
        self, images: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """images [B, N, H, W, C] uint8, mask [B, N] -> tokens [B, N*N_E, D_I], mask."""
        b, n = images.shape[:2]
        used = mask.any(0)  # slots valid somewhere in the batch; padding-only slots skip the ResNet
        if bool(used.all()):
            features = self._features(images, mask)
        else:  # (no slot used at all: zeros, no ResNet call)
            valid = self._features(images[:, used], mask[:, used]) if bool(used.any()) else None
            features = images.new_zeros(  # the ResNet's dtype: bf16 under autocast
                b, n, self.tokens_per_image, self.proj.out_features,
                dtype=self.proj.weight.dtype if valid is None else valid.dtype,
            )
            if valid is not None:
                features[:, used] = valid
        tokens = (features + self.spatial + self.slot[:n]) * mask[:, :, None, None]
        return tokens.flatten(1, 2), mask.repeat_interleave(self.tokens_per_image, dim=1)

    def _features(self, images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """ResNet + projection: [B, N, H, W, C] uint8 -> [B, N, N_E, D_I]."""
        b, n = images.shape[:2]
        x = images.to(self.proj.weight.dtype).div(255.0) * mask[:, :, None, None, None]
        x = x.flatten(0, 1).permute(0, 3, 1, 2)  # [B*N, C, H, W]
        x = torch.relu(self.resnet(x)).flatten(2).transpose(1, 2)  # [B*N, N_E, C]
        return self.proj(x).view(b, n, self.tokens_per_image, -1)


class TextEncoder(nn.Module):
    """phi^L: a learned look-up table [1..N_T] -> R^{D_I} plus a position embedding."""

    def __init__(self, vocab_size: int, num_tokens: int, d_i: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, d_i)
        nn.init.normal_(self.embed.weight, std=0.02)
        self.position = _embedding(num_tokens, d_i)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """ids [B, N_tau^L] int64, mask [B, N_tau^L] -> tokens [B, N_tau^L, D_I], mask."""
        tokens = self.embed(ids.masked_fill(~mask, 0)) + self.position
        return tokens * mask[..., None], mask


class ActionEncoder(nn.Module):
    """phi^A = L^A2 . L^A1 . phi^multi-scale: an action a in R^{N^A} -> one query of width D_O.

    L^A1 projects each of the N^A*N_G normalised scalars with its own weight and bias to D_O;
    L^A2 is a mean over the valid ones followed by a D_O x D_O projection (a learned pooling,
    not a dense (N^A*N_G*D_O) x D_O matrix). Both are linear, so the N^A*N_G tokens are never
    materialised: an einsum gives the pooled sum directly, for any number K of actions.
    """

    def __init__(self, num_actions: int, num_gains: int, d_o: int) -> None:
        super().__init__()
        self.normalizer = MultiScaleNormalizer(num_gains)
        # Unit-scale (fan-in 1) init, not the 0.02 of embeddings: the query is the only path of
        # the action into Q, and at 0.02 it is ~1% of the attention output it is added to, so
        # the decoder's LayerNorm squashes it (measured with QDecoder's bandit: see there).
        self.weight = nn.Parameter(torch.randn(num_actions, num_gains, d_o))
        self.bias = nn.Parameter(torch.randn(num_actions, num_gains, d_o))
        self.pool = nn.Linear(d_o, d_o)

    def forward(self, actions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """actions [B, K, N^A], mask [B, N^A] bool -> queries [B, K, D_O]."""
        m = mask[:, None, :]
        features = self.normalizer(actions.masked_fill(~m, 0.0)) * m[..., None]
        features = features.to(self.weight.dtype)  # [B, K, N^A, N_G]
        summed = torch.einsum("bkag,agd->bkd", features, self.weight)
        summed = summed + torch.einsum("ba,agd->bd", mask.to(features.dtype), self.bias)[:, None]
        count = mask.sum(-1).clamp(min=1).to(summed.dtype) * self.weight.shape[1]
        return self.pool(summed / count[:, None, None])
