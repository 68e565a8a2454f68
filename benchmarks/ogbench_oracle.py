"""The benchmark's markov oracle scored by `pac eval`'s harness on OGBench's evaluation tasks.

    PYTHONPATH=benchmarks/.ogbench:$PWD nice -n 5 .venv/bin/python benchmarks/ogbench_oracle.py \
        --episodes 20 --seed 0

Runs `--episodes` episodes of each task of params/presets/ogbench_cube.yaml (the 5 single-task
envs of cube-single, their time limits, success as the benchmark's evaluation reads it) with the
tasks' scripted expert, the oracle, through pac.evaluation.evaluator (the same path as
``pac eval --policy expert``) and prints its table: success with Wilson 95 % intervals per task
and pooled (the "5-task average"), the ceiling a policy trained on the oracle's data is measured
against.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time

from pac.config import load_config
from pac.evaluation.evaluator import evaluate

PRESET = "params/presets/ogbench_cube.yaml"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--episodes", type=int, default=20, help="episodes per task")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--params", default=PRESET, help="params declaring the OGBench tasks")
    args = ap.parse_args(argv)
    cfg = load_config(args.params, [f"eval.episodes_per_task={args.episodes}",
                                    f"eval.seed={args.seed}", f"eval.workers={args.workers}",
                                    "eval.videos_per_task=0"])
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        result = evaluate(cfg, policy="expert", out_dir=out, track=False)
        print(result.table)
    print(f"{time.perf_counter() - start:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
