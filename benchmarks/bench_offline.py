"""The laptop Table 1: offline RL against behaviour cloning on low-quality data (§4.2, Table 1).

For each task, one low-quality dataset is generated with the project's own graded behaviour
policy (``--quality``, default 0.42: about 28% success, the CHEF:sim analogue of Table 6). Every
arm trains on exactly the same episodes, with the same number of updates, batch and seeds, and
is evaluated with one protocol (``pac.evaluation``: % of expert return with standard-error 95%
intervals, success with Wilson intervals, on the same fixed episode seeds):

* ``bc``           alpha = 1, beta = 0: behaviour cloning on all data;
* ``filtered_bc``  bc on the successful episodes only (App. C.5);
* ``bc_q``         alpha = 1, beta = 38: BC plus a Q-function the policy never uses;
* ``pac``          alpha = 0.75, beta = 38 (eq. 11);
* ``alpha_pac``    the low-quality group at alpha = 0, beta = 1900 (App. C.5's CHEF values).

Public peers (d3rlpy's TD3+BC and IQL on the same transitions, in the benchmark's own
virtualenv) are not wired in yet.

The critic's diagnostics are printed next to each PAC arm: the spread of Q over the N sampled
actions, the weights' effective sample size (N = uniform) and entropy (ln N = uniform).

    python benchmarks/bench_offline.py --out runs/bench_offline            # the full table
    python benchmarks/bench_offline.py --quick --out /tmp/bench_offline    # a 2-minute smoke run
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

ARMS = {
    "bc": ["loss.variant=bc", "loss.alpha=1.0", "loss.beta=0.0"],
    "filtered_bc": ["loss.variant=filtered_bc", "loss.alpha=1.0", "loss.beta=0.0"],
    "bc_q": ["loss.variant=bc_q", "loss.alpha=1.0"],
    "pac": ["loss.variant=pac"],
    "alpha_pac": ["loss.variant=alpha_pac"],
}
DIAGNOSTICS = ("q_spread", "weight_ess", "weight_entropy", "mean_q")


def group_override(tasks: list[str], quality: float, episodes: int, arm: str) -> str:
    alpha_beta = ", alpha: 0.0, beta: 1900.0" if arm == "alpha_pac" else ""
    return (f"data.groups=[{{name: low_quality, tasks: [{', '.join(tasks)}], quality: {quality},"
            f" episodes_per_task: {episodes}{alpha_beta}}}]")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="folder for data, runs and results")
    ap.add_argument("--tasks", nargs="+", default=["point_mass.easy", "reacher.easy"])
    ap.add_argument("--quality", type=float, default=0.42)
    ap.add_argument("--episodes", type=int, default=60, help="episodes per task")
    ap.add_argument("--episode-steps", type=int, default=100)
    ap.add_argument("--updates", type=int, default=2000)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    ap.add_argument("--eval-episodes", type=int, default=30, help="per task and seed")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="extra params for every arm, e.g. loss.target_update_period=25")
    ap.add_argument("--quick", action="store_true", help="tiny budget: a smoke run")
    args = ap.parse_args()
    if args.quick:
        args.episodes, args.updates, args.seeds, args.eval_episodes = 6, 20, 1, 2
        args.episode_steps = 30

    import torch

    from pac.config import load_config
    from pac.data import TaskTokenizer, store_root, tokenizer_path
    from pac.data.generate import generate_group
    from pac.evaluation.evaluator import evaluate
    from pac.train import train

    torch.set_num_threads(1)  # arms are measured one after another on one core each
    out = args.out.resolve()
    data = out / "data"
    base = [
        f"data.episode_steps={args.episode_steps}",
        f"eval.episodes_per_task={args.eval_episodes}", "eval.videos_per_task=0",
        "eval.workers=1", f"train.steps={args.updates}",
        f"train.checkpoint_every={args.updates}", f"train.log_every={max(1, args.updates // 20)}",
        f"tracking.uri=sqlite:///{out / 'mlflow.db'}", f"tracking.artifact_dir={out / 'mlruns'}",
        *args.set,
    ]
    group = group_override(args.tasks, args.quality, args.episodes, "bc")
    cfg = load_config(overrides=[*base, group])
    if not (data / ".complete").exists():
        print(f"generating {len(args.tasks)} x {args.episodes} episodes, quality {args.quality}")
        generate_group(cfg, "low_quality", store_root(data), workers=1, progress=False)
        TaskTokenizer.train(tokenizer_path(data), cfg.data.tokenizer_vocab,
                            cfg.data.tokenizer_type, num_tokens=cfg.model.num_text_tokens)
        (data / ".complete").write_text("")

    results = []
    for arm in args.arms:
        for seed in range(args.seeds):
            run = out / "runs" / f"{arm}-seed{seed}"
            overrides = [*base, group_override(args.tasks, args.quality, args.episodes, arm),
                         *ARMS[arm], f"train.seed={seed}", f"train.out_dir={run}"]
            arm_cfg = load_config(overrides=overrides)
            start = time.perf_counter()
            if not (run / "policy").is_dir():
                trained = train(arm_cfg, data_root=data)
                diag = {k: trained.metrics.get(k, math.nan) for k in DIAGNOSTICS}
            else:
                diag = json.loads((run / "metrics.json").read_text())
                diag = {k: diag.get(k, math.nan) for k in DIAGNOSTICS}
            train_s = time.perf_counter() - start
            start = time.perf_counter()
            result = evaluate(arm_cfg, run / "policy", args.tasks, out_dir=run / "eval",
                              track=False)
            overall = next(r for r in result.rows if r["level"] == "all")
            row = {"arm": arm, "seed": seed, "train_s": round(train_s, 1),
                   "eval_s": round(time.perf_counter() - start, 1), **overall, **diag}
            results.append(row)
            print(f"{arm:12s} seed {seed}: {overall['pct_expert']:6.1f}% of expert"
                  f" [{overall['pct_expert_low']:.1f}, {overall['pct_expert_high']:.1f}],"
                  f" success {overall['success_rate']:.1f}%, train {train_s:.0f} s,"
                  f" q_spread {diag['q_spread']:.3f}, ESS {diag['weight_ess']:.2f}", flush=True)
    (out / "results.json").write_text(json.dumps(results, indent=1, default=float))
    print("\n| arm | seeds | % of expert (mean over seeds) | success % | train s / seed |")
    print("|---|---:|---:|---:|---:|")
    for arm in args.arms:
        rows = [r for r in results if r["arm"] == arm]
        pct = sum(r["pct_expert"] for r in rows) / len(rows)
        succ = sum(r["success_rate"] for r in rows) / len(rows)
        secs = sum(r["train_s"] for r in rows) / len(rows)
        print(f"| {arm} | {len(rows)} | {pct:.1f} | {succ:.1f} | {secs:.0f} |")


if __name__ == "__main__":
    main()
