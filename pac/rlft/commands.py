"""`pac rollout`, `pac ingest` and `pac rlft`: robot rollouts, their ingestion, RLFT rounds (§4.3).

    pac rollout --landing data/landing           # the policy on the (simulated) robot
    pac ingest data/landing                      # validate, quarantine, commit, DVC, MLflow
    pac ingest data/lerobot_landing --group real_robot --source real   # holds dataset folders
    pac rlft --rounds 2                          # collect -> ingest -> fine-tune -> evaluate
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pac.cli_args import add_config_args, config_from_args
from pac.config import DECODES, ConfigError


def _cmd_rollout(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    from pac.evaluation.rollout import PolicyServer
    from pac.rlft.robot import collect, sim_robot

    checkpoint = args.checkpoint or str(Path(cfg.train.out_dir) / "policy")
    tasks = args.tasks.split(",") if args.tasks else list(cfg.rlft.tasks)
    try:
        server = PolicyServer.load(checkpoint, args.decode or cfg.rlft.decode,
                                   cfg.eval.num_candidates, precision=cfg.eval.precision)
        robot = sim_robot(cfg, checkpoint, tasks, realtime=args.realtime)
        got = collect(server, robot, tasks, args.episodes or cfg.rlft.episodes_per_task,
                      args.landing or cfg.rlft.landing_dir, args.round, cfg.data.seed)
    except (FileNotFoundError, ValueError) as exc:
        print(f"pac rollout: {exc}", file=sys.stderr)
        return 2
    print(f"{len(got.files)} episode files in {args.landing or cfg.rlft.landing_dir};"
          f" success {100 * got.success_rate:.1f}%; policy {got.policy_hz:.0f} Hz at batch 1;"
          f" {got.seconds:.1f} s")
    return 0


def _cmd_ingest(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    from pac.rlft.ingest import dvc_track, ingest, log_ingest
    from pac.rlft.ingest.checks import printable

    try:
        report = ingest(args.landing, args.data_root or cfg.data.root, group=args.group,
                        round_k=args.round, source=args.source, lock_wait_s=args.lock_wait)
    except (OSError, ValueError) as exc:  # IngestRefused is a ValueError
        print(f"pac ingest: {printable(str(exc))}", file=sys.stderr)
        return 2
    for label, reason in report.rejected.items():  # labels and reasons: one printable line each
        print(f"rejected {label}: {reason}", file=sys.stderr)
    for label, reason in report.left.items():
        print(f"left {label}: {reason}", file=sys.stderr)
    if report.accepted and not args.no_dvc:
        from pac.data import store_root

        report.data_version["dvc"] = dvc_track(
            store_root(args.data_root or cfg.data.root) / args.group
        )
    if not args.no_track:
        from pac.tracking import Tracker

        tracker = Tracker(cfg, "ingest", parent_run_id=args.parent_run,
                          tags={"pac.stage": "ingest"})
        log_ingest(tracker, report)
        tracker.finish()
    summary = {k: v for k, v in report.to_dict().items()
               if k not in ("accepted", "rejected", "left")}
    print(json.dumps(summary | {"rejected": len(report.rejected), "left": len(report.left)},
                     indent=1))
    return report.exit_code


def _cmd_rlft(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    from pac.rlft.rounds import rlft

    checkpoint = args.checkpoint or str(Path(cfg.train.out_dir) / "policy")
    try:
        result = rlft(cfg, checkpoint, args.rounds, data_root=args.data_root,
                      decode=args.decode, resume=args.resume, fresh=args.fresh,
                      track=not args.no_track,
                      tracking_parent_run=args.parent_run)
    except (ConfigError, ValueError, FileNotFoundError) as exc:
        print(f"pac rlft: {exc}", file=sys.stderr)
        return 2
    print(result.table)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "rollout",
        help="run the policy on the (simulated) robot; one rollout file per episode",
        description="The policy server (model loaded once, batch 1) drives the robot client"
        " (dm_control stand-in); each episode lands as a file (docs/rollout_format.md).",
    )
    add_config_args(p)
    p.add_argument("--checkpoint", default=None,
                   help="inference checkpoint folder (default: <train.out_dir>/policy)")
    p.add_argument("--landing", default=None, help="landing folder (default: rlft.landing_dir)")
    p.add_argument("--tasks", default=None, help="comma-separated tasks (default: rlft.tasks)")
    p.add_argument("--episodes", type=int, default=None,
                   help="episodes per task (default: rlft.episodes_per_task)")
    p.add_argument("--round", type=int, default=0, help="round k written into each file")
    p.add_argument("--decode", choices=DECODES, default=None,
                   help="action decoding (default: rlft.decode)")
    p.add_argument("--realtime", action="store_true", help="hold the robot's control rate")
    p.set_defaults(func=_cmd_rollout)

    p = sub.add_parser(
        "ingest",
        help="validate and commit rollout files / LeRobotDataset v3.0 folders to the store",
        description="Every item of LANDING (a rollout file or a LeRobotDataset v3.0 folder) is"
        " checked on its own: bad items go to LANDING/quarantine with a reason file; accepted"
        " episodes are committed atomically with their content hashes (duplicates add nothing),"
        " their originals moved to LANDING/processed; counts and the data version go to MLflow."
        " One ingest at a time per landing folder and per store (others wait, --lock-wait)."
        " Reason codes: docs/rollout_format.md.",
        epilog="exit status: 0 every item accepted or already ingested; 1 something was"
        " rejected (see LANDING/quarantine; the batch report is still written) or left in"
        " LANDING (changed while being read); 2 usage error or nothing done: LANDING missing,"
        " a file, a LeRobot dataset itself (put it inside a landing folder) or a folder inside"
        " one, the parent of a landing folder, a git/DVC repository root, the data folder,"
        " inside the store, not writable, with a symlinked quarantine/ or processed/ or a"
        " dataset named so; or the lock held past --lock-wait.",
    )
    add_config_args(p)
    p.add_argument("landing", help="landing folder holding rollout files / LeRobot dataset"
                   " folders (not a dataset folder itself)")
    p.add_argument("--group", default="rollouts", help="store group (default: rollouts)")
    p.add_argument("--round", type=int, default=0, help="RLFT round k of these episodes")
    p.add_argument("--source", choices=("rollout", "real", "sim"), default="rollout")
    p.add_argument("--data-root", default=None, help="data folder (default: data.root)")
    p.add_argument("--lock-wait", type=float, default=600.0, metavar="SECONDS",
                   help="how long to wait for another running ingest (default: 600)")
    p.add_argument("--no-dvc", action="store_true", help="do not `dvc add` the group folder")
    p.add_argument("--no-track", action="store_true", help="do not log to MLflow")
    p.add_argument("--parent-run", default=None, help="MLflow parent run id")
    p.set_defaults(func=_cmd_ingest)

    p = sub.add_parser(
        "rlft",
        help="RL fine-tuning rounds: collect, ingest, fine-tune, evaluate (Table 3)",
        description="Self-improvement rounds (§4.3) from a pretrained inference checkpoint;"
        " writes rlft.out_dir/rounds.{csv,md} and one nested MLflow run per round.",
    )
    add_config_args(p)
    p.add_argument("--rounds", type=int, default=None, help="rounds R (default: rlft.rounds)")
    p.add_argument("--checkpoint", default=None,
                   help="pretrained inference checkpoint (default: <train.out_dir>/policy)")
    p.add_argument("--data-root", default=None, help="data folder (default: data.root)")
    p.add_argument("--decode", choices=DECODES, default=None,
                   help="decoding of the collecting policy (default: rlft.decode)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run")
    p.add_argument("--fresh", action="store_true",
                   help="set an earlier run (rlft.out_dir, the rollouts group) aside and restart")
    p.add_argument("--no-track", action="store_true", help="do not log to MLflow")
    p.add_argument("--parent-run", default=None, help="MLflow parent run id")
    p.set_defaults(func=_cmd_rlft)
