"""`pac eval`: evaluation of a policy: dm_control rollouts (the paper's Tables 1 / 13,
:mod:`pac.evaluation`); tasks without a simulator (a robot's data) offline on held-out episodes
(action log-likelihood and error per dimension, Q against the Monte-Carlo return:
:mod:`pac.evaluation.offline`).

    pac eval                                    # <train.out_dir>/policy, else the newest flow
                                                # run's champion (runs/flow/<id>/), on its tasks
    pac eval --checkpoint runs:/<run_id>/policy_model  # a policy logged to MLflow
    pac eval --checkpoint models:/pac-policy@champion
    pac eval --policy expert                    # the harness check: the scripted expert
    pac eval --set eval.decode=q_rerank --set eval.episodes_per_task=100
    pac eval --offline --params my_robot.yaml   # only the tasks without a simulator, offline

Without --offline, the tasks without a simulator are evaluated offline (into <out>/offline) and
the others rolled out as before.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from pac.cli_args import add_config_args, config_from_args

MLFLOW_SCHEMES = ("runs:/", "models:/", "mlflow-artifacts:/")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval",
        help="evaluate a policy: dm_control rollouts (%% of expert, success) or, for tasks"
        " without a simulator, offline on held-out episodes",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config_args(p)
    p.add_argument(
        "--checkpoint",
        default=None,
        help="inference checkpoint folder or MLflow URI (runs:/ID/policy_model,"
        " models:/NAME@ALIAS);"
        " default: <train.out_dir>/policy, else the policy the newest flow run under"
        " runs/flow/ handed over",
    )
    p.add_argument(
        "--policy",
        choices=("checkpoint", "expert", "random"),
        default="checkpoint",
        help="what acts: the checkpoint's network (default) or a scripted reference policy",
    )
    p.add_argument(
        "--tasks",
        default=None,
        help="comma-separated tasks (default: the training tasks + eval.held_out_tasks)",
    )
    p.add_argument(
        "--offline",
        action="store_true",
        help="only the offline evaluation (tasks without a simulator, held-out episodes of the"
        " store under data.root: every eval.offline_holdout-th of a task)",
    )
    p.add_argument("--out", default=None, help="output folder (default: eval.out_dir)")
    p.add_argument("--no-track", action="store_true", help="do not log to MLflow")
    p.add_argument("--parent-run", default=None, help="MLflow parent run id")
    p.set_defaults(func=_cmd_eval)


def find_checkpoint(folder: Path) -> Path:
    """The inference checkpoint inside a downloaded artefact folder (it or one sub-folder)."""
    found = sorted({p.parent for p in folder.rglob("model.safetensors") if
                    (p.parent / "config.yaml").is_file()})
    if len(found) != 1:
        raise FileNotFoundError(
            f"expected one inference checkpoint (model.safetensors + config.yaml) under {folder},"
            f" found {len(found)}"
        )
    return found[0]


def default_checkpoint(cfg) -> str:
    """``<train.out_dir>/policy`` when it exists, else the policy the newest flow run handed
    over (said on stderr), else ``<train.out_dir>/policy`` (then reported missing)."""
    from pac.review.outputs import champion_policy, newest_flow_run

    own = Path(cfg.train.out_dir) / "policy"
    flow = newest_flow_run()
    if not own.is_dir() and flow is not None:
        found = champion_policy(flow)
        if found is not None:
            print(f"pac eval: no --checkpoint: the policy flow run {flow.name} handed over,"
                  f" {found}", file=sys.stderr)
            return str(found)
    return str(own)


def _route(cfg, checkpoint: str | None, tasks: list[str] | None, policy: str,
           offline_only: bool) -> tuple[list[str] | None, list[str]]:
    """(tasks to roll out, None = evaluate()'s default; tasks to evaluate offline). The
    checkpoint's training tasks (+ eval.held_out_tasks) when none are named; a scripted policy
    has no offline evaluation (its tasks all go to the rollouts, which refuse the ones without
    a simulator)."""
    from pac.evaluation.evaluator import default_tasks, split_by_simulator

    if policy != "checkpoint":
        if offline_only:
            raise ValueError("--offline evaluates a checkpoint, not --policy " + policy)
        return tasks, []
    if tasks is None:
        from pac.checkpoint import load_checkpoint_config

        tasks = default_tasks(load_checkpoint_config(checkpoint))
        tasks += [t for t in cfg.eval.held_out_tasks if t not in tasks]
    sim, offline = split_by_simulator(tasks)
    if offline_only:
        if sim:
            raise ValueError(f"task {sim[0]} has a simulator: --offline evaluates tasks without"
                             " one (roll it out without --offline)")
        if not offline:
            raise ValueError("no tasks without a simulator to evaluate offline")
        return [], offline
    return sim, offline


def _cmd_eval(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    from pac.evaluation.evaluator import evaluate

    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()] if args.tasks else None
    checkpoint = args.checkpoint or default_checkpoint(cfg)
    with tempfile.TemporaryDirectory(prefix="pac-eval-") as tmp:
        if args.policy != "checkpoint":
            checkpoint = None
        elif checkpoint.startswith(MLFLOW_SCHEMES):
            from pac.tracking import download_artifacts

            checkpoint = str(find_checkpoint(download_artifacts(cfg, checkpoint, tmp)))
        elif not Path(checkpoint).is_dir():
            from pac.review.outputs import FLOW_ROOT

            print(f"pac eval: no checkpoint: looked in {checkpoint} and for a flow run under"
                  f" {FLOW_ROOT}/; pass --checkpoint DIR or models:/<name>@champion (pac train"
                  " or make run writes one)", file=sys.stderr)
            return 2
        try:
            sim, offline = _route(cfg, checkpoint, tasks, args.policy, args.offline)
            if offline:
                from pac.evaluation.offline import evaluate_offline

                out = (Path(args.out) if args.offline and args.out
                       else Path(args.out or cfg.eval.out_dir) / "offline")
                done = evaluate_offline(cfg, checkpoint, offline, out_dir=out,
                                        track=not args.no_track,
                                        tracking_parent_run=args.parent_run,
                                        source=args.checkpoint or checkpoint)
                print(done.table)
                if done.mlflow_run_id:
                    print(f"MLflow run: {done.mlflow_run_id}")
                print(f"offline results in {done.out_dir}")
            if not sim:
                return 0
            result = evaluate(
                cfg,
                checkpoint,
                sim,
                policy=args.policy,
                out_dir=args.out,
                track=not args.no_track,
                tracking_parent_run=args.parent_run,
                source=args.checkpoint or checkpoint,
            )
        except (ValueError, FileNotFoundError) as exc:  # bad input: say what, nothing written
            print(f"pac eval: {exc}", file=sys.stderr)
            return 2
    print(result.table)
    print(json.dumps(result.metrics["timing"]))
    if result.mlflow_run_id:
        print(f"MLflow run: {result.mlflow_run_id}")
    print(f"results in {result.out_dir}")
    return 0
