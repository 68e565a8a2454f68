"""RLFT rounds against a control with the same fine-tuning updates and no rollouts.

    .venv/bin/python benchmarks/bench_rlft.py --checkpoint runs/pretrain/policy --rounds 2 \
        --set rlft.episodes_per_task=20 --set rlft.finetune_steps=150 \
        --set eval.episodes_per_task=30

Every RLFT round fine-tunes `rlft.finetune_steps` more updates, so a rising Table-3 row mixes
two effects: the self-generated data and the extra training. The control arm separates them:
from the same checkpoint, round k fine-tunes the same updates with the same schedule and seed on
the pretraining mixture alone (no rollouts group) and is evaluated on the same episodes (same
evaluation seeds). Both arms work on copies of the data folder; the store is never touched.
Prints a Markdown table (success % with Wilson 95% intervals on rlft.tasks).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

from pac.config import load_config
from pac.rlft.ingest import ROLLOUT_GROUP
from pac.rlft.rounds import evaluate_success, finetune_config, format_cell, rlft


def control_arm(cfg, checkpoint: Path, rounds: int, data_root: Path, out: Path) -> list[str]:
    """Success cells of rounds 1..R fine-tuned without rollouts (same updates, schedule, seed)."""
    from pac.train.trainer import train

    cells, policy = [], checkpoint
    for k in range(1, rounds + 1):
        ft = finetune_config(cfg, k, out)
        ft.data.groups = [g for g in ft.data.groups if g.name != ROLLOUT_GROUP]
        policy = train(ft, init_from=policy, data_root=data_root).policy_dir
        _, overall, mean_return = evaluate_success(cfg, policy, out / f"eval_{k}", False, None)
        cells.append(f"{format_cell(overall)} | {mean_return:.1f}")
        print(f"control round {k}: {cells[-1]}", file=sys.stderr)
    return cells


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--params", default=None, help="params YAML (default: params/default)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--checkpoint", required=True, help="pretrained inference checkpoint")
    parser.add_argument("--data-root", default=None, help="data folder (default: data.root)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--no-control", action="store_true", help="run the RLFT arm only")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cfg = load_config(args.params, [
            *args.set, f"rlft.out_dir={tmp / 'rlft'}", f"tracking.uri=sqlite:///{tmp}/ml.db",
            f"tracking.artifact_dir={tmp / 'artifacts'}", "eval.videos_per_task=0",
        ])
        data = Path(args.data_root or cfg.data.root)
        for arm in ("rlft_data", "control_data"):
            shutil.copytree(data, tmp / arm, ignore=shutil.ignore_patterns(ROLLOUT_GROUP))
        start = time.perf_counter()
        result = rlft(cfg, args.checkpoint, args.rounds, data_root=tmp / "rlft_data", track=False)
        rlft_s = time.perf_counter() - start
        control = ["(not run) | –"] * args.rounds if args.no_control else control_arm(
            cfg, Path(args.checkpoint), args.rounds, tmp / "control_data", tmp / "control")
    r = cfg.rlft
    print(f"RLFT: {r.episodes_per_task} rollouts per task per round (decode={r.decode},"
          f" lambda={r.weight:g}, alpha={r.alpha:g}, beta={r.beta:g}), {r.finetune_steps}"
          f" fine-tuning updates per round; {cfg.eval.episodes_per_task} evaluation episodes"
          f" per task on {', '.join(r.tasks)}; RLFT arm {rlft_s / 60:.1f} min\n")
    print("| Iteration | RLFT: success % [Wilson 95%] | mean return |"
          " control, no rollouts: success % | mean return |")
    print("|---|---:|---:|---:|---:|")
    for row in result.rows:
        ctl = "same checkpoint | –" if row.round == 0 else control[row.round - 1]
        print(f"| {row.label} | {format_cell(row.overall)} | {row.mean_return:.1f} | {ctl} |")


if __name__ == "__main__":
    main()
