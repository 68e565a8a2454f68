"""Evaluation speed: episodes/s with 1 and 2 workers, and policy inference rate at batch 1.

    .venv/bin/python benchmarks/bench_eval.py                 # both parts, prints Markdown
    .venv/bin/python benchmarks/bench_eval.py --part inference --scales tiny XXS L

* Episodes/s: ``pac.evaluation.evaluator.evaluate`` on the default tasks (params/default.yaml,
  tiny scale, argmax decoding, no videos) with ``eval.workers`` 1 and 2; the rate covers the
  evaluated policy's episodes in a warm pool (the reference episodes run first in the same pool).
* Inference rate: ``PolicyServer.act`` at batch 1 with the paper's full input format (Table 5,
  params/presets/L.yaml: 223 proprio, 5 camera images 80x80, 3 goal-image slots, 50 text tokens,
  38 actions, 32000-token vocabulary) for each scale of Table 4; random weights (speed does not
  depend on them). The paper's anchor: L at 20 Hz on an RTX 3090 (§4.3).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from pac.checkpoint import save_inference_checkpoint
from pac.config import REPO_ROOT, load_config
from pac.data.tokenizer import TaskTokenizer
from pac.evaluation.evaluator import evaluate
from pac.evaluation.rollout import PolicyServer
from pac.model import PerceiverActorCritic

L_PRESET = REPO_ROOT / "params" / "presets" / "L.yaml"


def make_checkpoint(root: Path, params: Path | None, overrides: list[str]) -> Path:
    """A randomly initialised model of the given params saved as an inference checkpoint."""
    cfg = load_config(params, overrides)
    torch.manual_seed(0)
    model = PerceiverActorCritic(cfg.model)
    spm = root / "spm.model"
    TaskTokenizer.train(spm, min(cfg.data.tokenizer_vocab, 64))
    return save_inference_checkpoint(model, cfg, root / "policy", spm)


def bench_episodes(root: Path, episodes: int) -> list[str]:
    ckpt = make_checkpoint(root, None, [])
    lines = ["| workers | episodes | episodes/s | env steps/s | inference Hz (batch 1) |",
             "|---:|---:|---:|---:|---:|"]
    for workers in (1, 2):
        cfg = load_config(overrides=[
            f"eval.episodes_per_task={episodes}", f"eval.workers={workers}",
            "eval.videos_per_task=0", f"eval.out_dir={root / f'eval{workers}'}",
        ])
        result = evaluate(cfg, ckpt, track=False)
        t = result.metrics["timing"]
        n = result.metrics["train"]["all"]["episodes"]
        lines.append(f"| {workers} | {n} | {t['episodes_per_s']:.2f} | "
                      f"{t['env_steps_per_s']:.0f} | {t['inference_hz']:.0f} |")
        print(lines[-1], file=sys.stderr)
    return lines


def bench_inference(
    root: Path, scales: list[str], decodes: list[str], precisions: list[str], calls: int,
    threads_list: list[int],
) -> list[str]:
    task = "walker.stand"  # 24 proprio values of the 223 slots, 6 of the 38 actions
    rng = np.random.default_rng(0)
    proprio = rng.normal(size=24).astype(np.float32)
    images = rng.integers(0, 255, size=(5, 80, 80, 3), dtype=np.uint8)
    lines = ["| scale | params | decode | precision | threads | wall ms / action (median) |"
             " Hz (wall) | CPU ms / action | Hz if the cores were free |",
             "|---|---:|---|---|---:|---:|---:|---:|---:|"]
    for scale in scales:
        ckpt = make_checkpoint(root / scale, L_PRESET, [f"model.scale={scale}"])
        for decode, precision in [(d, p) for d in decodes for p in precisions]:
            server = PolicyServer.load(ckpt, decode=decode, precision=precision)
            params = sum(p.numel() for p in server.model.parameters())
            for threads in threads_list:
                torch.set_num_threads(threads)
                for _ in range(3):  # warm-up
                    server.act(proprio, task, images)
                server.latencies.clear()
                deadline = time.perf_counter() + 60.0
                cpu = []
                while len(server.latencies) < calls and time.perf_counter() < deadline:
                    c0 = time.process_time()
                    server.act(proprio, task, images)
                    cpu.append(time.process_time() - c0)
                ms = 1e3 * statistics.median(server.latencies)
                # one thread: CPU time per action is the latency on an otherwise idle core
                cpu_ms = 1e3 * statistics.median(cpu)
                free_hz = f"{1e3 / cpu_ms:.1f}" if threads == 1 else "–"
                lines.append(f"| {scale} | {params / 1e6:.1f}M | {decode} | {precision} | "
                             f"{threads} | "
                             f"{ms:.1f} | {1e3 / ms:.1f} | {cpu_ms:.1f} | {free_hz} |")
                print(lines[-1], file=sys.stderr)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--part", choices=("all", "episodes", "inference"), default="all")
    parser.add_argument("--episodes", type=int, default=10, help="episodes per task")
    parser.add_argument("--scales", nargs="+", default=["tiny", "XXS"])
    parser.add_argument("--decodes", nargs="+", default=["argmax", "q_rerank"])
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"],
                        help="inference arithmetic (eval.precision)")
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2],
                        help="torch intra-op threads")
    parser.add_argument("--calls", type=int, default=30, help="timed act() calls per setting")
    args = parser.parse_args()
    os.environ.setdefault("MUJOCO_GL", "egl")
    out = [f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
           f"torch {torch.__version__}, load average before: {os.getloadavg()[0]:.1f}", ""]
    with tempfile.TemporaryDirectory() as tmp:
        if args.part in ("all", "episodes"):
            out += bench_episodes(Path(tmp), args.episodes) + [""]
        if args.part in ("all", "inference"):
            out += bench_inference(Path(tmp), args.scales, args.decodes, args.precisions,
                                   args.calls, args.threads)
    print("\n".join(out))


if __name__ == "__main__":
    main()
