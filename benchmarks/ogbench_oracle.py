"""The benchmark's markov oracle scored by the OGBench harness (pac.evaluation.ogbench).

    PYTHONPATH=benchmarks/.ogbench:$PWD nice -n 5 .venv/bin/python benchmarks/ogbench_oracle.py \
        --episodes 20 --seed 0

Runs `--episodes` episodes of each of an env's 5 evaluation tasks (the single-task envs, their
time limits, success as the benchmark's evaluation reads it) and prints the success rates with
Wilson 95 % intervals, per task and pooled (the "5-task average"): the ceiling a policy trained on
the oracle's data is measured against.
"""

from __future__ import annotations

import argparse
import sys
import time

from pac.data.ogbench import ENVS, MarkovOraclePolicy, env_tasks
from pac.evaluation.ogbench import evaluate_ogbench


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--episodes", type=int, default=20, help="episodes per task")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--env", choices=list(ENVS), default="cube-single")
    args = ap.parse_args(argv)
    start = time.perf_counter()
    result = evaluate_ogbench(lambda env: MarkovOraclePolicy(env, seed=args.seed),
                              [t.name for t in env_tasks(args.env)], args.episodes, args.seed,
                              name=f"{args.env} (5 tasks)")
    print("| task | episodes | success % | Wilson 95 % | mean steps | mean return |")
    print("|---|---|---|---|---|---|")
    for row in [*result.tasks, result.pooled]:
        eps = [e for e in result.episodes if row.name in (e.task, result.pooled.name)]
        steps = sum(e.steps for e in eps) / len(eps)
        print(f"| {row.name} | {row.episodes} | {row.success_rate:.0f} |"
              f" [{row.success_low:.1f}, {row.success_high:.1f}] | {steps:.1f} |"
              f" {row.mean_return:.1f} |")
    limits = sorted(set(result.episode_steps.values()))
    print(f"time limit(s) {limits} steps; {time.perf_counter() - start:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
