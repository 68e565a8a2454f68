"""OGBench cube data by the benchmark's recipe, as LeRobot datasets that `pac ingest` reads.

    bash benchmarks/ogbench_env.sh      # once: ogbench 1.2.2 into benchmarks/.ogbench
    PYTHONPATH=benchmarks/.ogbench:$PWD nice -n 5 .venv/bin/python benchmarks/ogbench_generate.py \
        --kind play --episodes 20 --steps 1001 --seed 0 --out outputs/ogbench

Writes one LeRobotDataset v3.0 folder per evaluation task, ``<out>/cube-single-<kind>-task<k>``
(the same frames, that task's relabelled single-task rewards; pac.data.ogbench has the recipe),
and prints what was made and the collection speed: env steps per second of wall clock and of
this process's CPU time (the rate of one free core), and the time a published-size dataset
(1000 episodes x 1001 frames = 1M transitions) takes at that rate on one and on two cores
(episodes are independent, so two processes each make half).
"""

from __future__ import annotations

import argparse
import json
import sys

from pac.data.ogbench import ENVS, EPISODE_FRAMES, EPISODES, KINDS, NUM_TASKS, generate


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kind", choices=KINDS, default="play",
                    help="play: plan oracle, new target after each; noisy: markov oracle + noise")
    ap.add_argument("--episodes", type=int, default=EPISODES,
                    help=f"episodes (default {EPISODES}, the published size)")
    ap.add_argument("--steps", type=int, default=EPISODE_FRAMES,
                    help=f"frames per episode (default {EPISODE_FRAMES}: 1000 transitions)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--env", choices=list(ENVS), default="cube-single")
    ap.add_argument("--tasks", type=int, nargs="+", default=list(range(1, NUM_TASKS + 1)),
                    help="evaluation tasks to relabel for (default: all 5)")
    ap.add_argument("--out", required=True, help="folder for the datasets (a landing folder)")
    ap.add_argument("--every", type=int, default=10, help="print progress every N episodes")
    args = ap.parse_args(argv)

    def progress(ep: int, rollout) -> None:
        if (ep + 1) % args.every == 0 or ep + 1 == args.episodes:
            print(f"episode {ep + 1}/{args.episodes}: {rollout.targets} targets,"
                  f" {rollout.at_target} frames at the current target", file=sys.stderr)

    try:
        report = generate(args.out, args.kind, args.episodes, args.steps, args.seed, args.env,
                          args.tasks, progress)
    except (ValueError, FileExistsError, ImportError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    published = EPISODES * EPISODE_FRAMES
    rate = report.env_steps_per_cpu_s
    print(json.dumps({
        "kind": report.kind, "env": report.env, "episodes": report.episodes,
        "frames": report.frames, "datasets": {k: str(v) for k, v in report.datasets.items()},
        "targets_finished": report.targets,
        "success_frames": report.success_frames,
        "collect_s": round(report.collect_s, 1), "collect_cpu_s": round(report.collect_cpu_s, 1),
        "total_s": round(report.total_s, 1),
        "env_steps_per_s": round(report.env_steps_per_s, 1),
        "env_steps_per_cpu_s": round(rate, 1),
        "published_size_h_1_core": round(published / rate / 3600, 2),
        "published_size_h_2_cores": round(published / rate / 2 / 3600, 2),
    }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
