"""Attention blocks of the Perceiver backbone (App. B.3): X-ATTN and S-ATTN.

Pre-LayerNorm residual blocks ``x = x + f_ATTN(LN(x), LN(kv)); x = x + MLP(LN(x))`` with an MLP
of hidden size ``W * width`` (Table 4's widening factor). Keys may carry a padding mask (True =
valid): padded keys get zero attention weight, so their values can never reach the output.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def guard_mask(mask: torch.Tensor) -> torch.Tensor:
    """Let a row with no valid key attend to key 0 (a zeroed padding token) instead of NaN.

    Callers zero padded tokens, so the output of such a row is a constant independent of the
    padded values. Branch-free (no host sync).
    """
    first = torch.zeros_like(mask)
    first[..., 0] = True
    return mask | (first & ~mask.any(dim=-1, keepdim=True))


class MultiHeadAttention(nn.Module):
    """f_ATTN with linear projections: queries of width `q_dim`, keys/values of width `kv_dim`."""

    def __init__(self, q_dim: int, kv_dim: int, num_heads: int) -> None:
        super().__init__()
        if q_dim % num_heads:
            raise ValueError(f"num_heads={num_heads} must divide the query width {q_dim}")
        self.num_heads = num_heads
        self.q_proj = nn.Linear(q_dim, q_dim)
        self.k_proj = nn.Linear(kv_dim, q_dim)
        self.v_proj = nn.Linear(kv_dim, q_dim)
        self.o_proj = nn.Linear(q_dim, q_dim)

    def forward(
        self, x_q: torch.Tensor, x_kv: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """x_q [B, Nq, q_dim], x_kv [B, Nk, kv_dim], mask [B, Nk] bool -> [B, Nq, q_dim]."""
        b, n_q, _ = x_q.shape
        n_k = x_kv.shape[1]
        h = self.num_heads

        def heads(x: torch.Tensor, n: int) -> torch.Tensor:
            return x.view(b, n, h, -1).transpose(1, 2)  # [B, H, N, d_head]

        q = heads(self.q_proj(x_q), n_q)
        k = heads(self.k_proj(x_kv), n_k)
        v = heads(self.v_proj(x_kv), n_k)
        attn_mask = None if mask is None else guard_mask(mask)[:, None, None, :]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        return self.o_proj(out.transpose(1, 2).reshape(b, n_q, -1))


class MLP(nn.Module):
    """The residual MLP of an attention block: width -> W * width -> width (GELU)."""

    def __init__(self, width: int, widening: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(width, widening * width), nn.GELU(), nn.Linear(widening * width, width)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class CrossAttentionBlock(nn.Module):
    """X-ATTN(x_Q, x_KV): queries attend to an input sequence (App. B.3).

    ``widening=0`` gives a block without MLP (the policy and Q decoders, see PerceiverActorCritic).
    """

    def __init__(self, q_dim: int, kv_dim: int, num_heads: int, widening: int) -> None:
        super().__init__()
        self.q_norm = nn.LayerNorm(q_dim)
        self.kv_norm = nn.LayerNorm(kv_dim)
        self.attn = MultiHeadAttention(q_dim, kv_dim, num_heads)
        self.mlp_norm = nn.LayerNorm(q_dim) if widening else None
        self.mlp = MLP(q_dim, widening) if widening else None

    def forward(
        self, x_q: torch.Tensor, x_kv: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        x = x_q + self.attn(self.q_norm(x_q), self.kv_norm(x_kv), mask)
        if self.mlp is not None:
            x = x + self.mlp(self.mlp_norm(x))
        return x


class SelfAttentionBlock(nn.Module):
    """S-ATTN(z) = ATTN(z, z, z) on the latents (App. B.3)."""

    def __init__(self, width: int, num_heads: int, widening: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.attn = MultiHeadAttention(width, width, num_heads)
        self.mlp_norm = nn.LayerNorm(width)
        self.mlp = MLP(width, widening)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.norm(z)
        z = z + self.attn(h, h)
        return z + self.mlp(self.mlp_norm(z))
