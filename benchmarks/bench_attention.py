"""The Perceiver's point, measured: the XXS Perceiver trunk vs a full self-attention trunk.

    python benchmarks/bench_attention.py [--batch 2] [--repeats 3] [--precisions fp32 bf16]

Both trunks read the same e_I: 2,634 input tokens of width D_I = 256 (Table 5's format:
223 x 8 proprio gain tokens, 8 x 100 image tokens, 50 text tokens) and have the XXS width and
depth (D_Z = 768, 8 heads, MLP widening 1, M + 1 = 5 attention blocks):

* Perceiver (App. B.3, `pac.model.pac_model.PerceiverEncoder`): one cross-attention from the
  N_Z latents to the 2,634 tokens, then M = 4 self-attention blocks on the latents;
* full self-attention (a Gato-style trunk): a linear D_I -> D_Z token projection, then M + 1 = 5
  `pac.model.attention.SelfAttentionBlock`s over all 2,634 tokens.

Forward passes only (no grad), fp32 and bf16 autocast, best wall time of `--repeats` calls
after one warm-up. The FLOP ratio is counted from the operations the two forwards actually run
(`torch.utils.flop_counter.FlopCounterMode`: matmuls and attention), not from a formula.
"""

from __future__ import annotations

import argparse
import os
import time

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from pac.config import ModelConfig
from pac.model.attention import SelfAttentionBlock
from pac.model.info import input_tokens, scale_config
from pac.model.pac_model import PerceiverEncoder


class FullAttentionTrunk(nn.Module):
    """Linear D_I -> D_Z, then `depth` self-attention blocks over every input token."""

    def __init__(self, cfg: ModelConfig, depth: int) -> None:
        super().__init__()
        self.project = nn.Linear(cfg.d_i, cfg.d_z)
        self.blocks = nn.ModuleList(
            SelfAttentionBlock(cfg.d_z, cfg.num_heads, cfg.widening) for _ in range(depth)
        )

    def forward(self, e_i: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = self.project(e_i)  # every token is valid here: the mask is not needed
        for block in self.blocks:
            x = block(x)
        return x


def flops(trunk: nn.Module, e_i: torch.Tensor, mask: torch.Tensor) -> int:
    with FlopCounterMode(display=False) as counter:  # weights need no grad: see main()
        trunk(e_i, mask)
    return counter.get_total_flops()


def wall_ms(trunk: nn.Module, e_i: torch.Tensor, mask: torch.Tensor, precision: str,
            repeats: int) -> float:
    """Best wall time (ms) of one forward over `repeats` calls after a warm-up: on a shared
    machine the minimum is the estimate least inflated by other jobs."""
    times = []
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16,
                                         enabled=precision == "bf16"):
        for i in range(repeats + 1):
            start = time.perf_counter()
            trunk(e_i, mask)
            if i:
                times.append(time.perf_counter() - start)
    return 1000 * min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"],
                        choices=["fp32", "bf16"])
    args = parser.parse_args()
    torch.manual_seed(0)
    cfg = scale_config("XXS")
    n = input_tokens(cfg)
    e_i = torch.randn(args.batch, n, cfg.d_i)
    mask = torch.ones(args.batch, n, dtype=torch.bool)
    perceiver = PerceiverEncoder(cfg).eval().requires_grad_(False)
    full = FullAttentionTrunk(cfg, cfg.num_blocks + 1).eval().requires_grad_(False)
    f_p, f_f = flops(perceiver, e_i, mask), flops(full, e_i, mask)
    print(f"XXS trunks over {n} tokens (D_I {cfg.d_i}, D_Z {cfg.d_z}, N_Z {cfg.num_latents},"
          f" {cfg.num_blocks + 1} blocks), batch {args.batch}, {torch.get_num_threads()} threads,"
          f" load average {os.getloadavg()}")
    print(f"forward GFLOP: Perceiver {f_p / 1e9:.1f}, full self-attention {f_f / 1e9:.1f}"
          f" -> FLOP ratio {f_f / f_p:.1f}x")
    print("| precision | Perceiver ms | full self-attention ms | measured speed-up | FLOP ratio |")
    print("|---|---:|---:|---:|---:|")
    for precision in args.precisions:
        t_p = wall_ms(perceiver, e_i, mask, precision, args.repeats)
        t_f = wall_ms(full, e_i, mask, precision, args.repeats)
        print(f"| {precision} | {t_p:.1f} | {t_f:.1f} | {t_f / t_p:.1f}x | {f_f / f_p:.1f}x |",
              flush=True)


if __name__ == "__main__":
    main()
