"""`pac train` (DeepSpeed pretraining / fine-tuning) and `pac plan` (memory and FLOPs)."""

from __future__ import annotations

import argparse
import sys

from pac.cli_args import add_config_args, config_from_args
from pac.config import ConfigError


def _cmd_train(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    from pac.data.store import StoreError
    from pac.train.checkpoints import DiskFullError
    from pac.train.trainer import train

    try:
        result = train(cfg, resume=args.resume, init_from=args.init_from,
                       data_root=args.data_root, tracking_parent_run=args.parent_run_id)
    except (ConfigError, StoreError) as exc:
        print(f"pac train: {exc}", file=sys.stderr)
        return 2
    except DiskFullError as exc:
        print(f"pac train: {exc}", file=sys.stderr)
        return 1
    if result.run_id:
        print(f"policy: {result.policy_dir}\ncheckpoint: {result.checkpoint}\n"
              f"mlflow run: {result.run_id}")
    return 0


def _cmd_plan(args: argparse.Namespace) -> int:
    overrides = list(args.overrides)
    if args.scale:
        overrides.append(f"model.scale={args.scale}")
    cfg = config_from_args(argparse.Namespace(params=args.params, overrides=overrides))
    from pac.train.plan import deepspeed_tables, format_plan, make_plan

    plan = make_plan(cfg, args.gpus, args.gpu_mem, args.gpus_per_node, args.batch)
    print(format_plan(plan))
    if args.deepspeed_tables:
        print()
        print(deepspeed_tables(plan.params, plan.largest_layer, args.gpus, args.gpus_per_node))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="pretrain PAC on a DeepSpeed engine (one process, or under deepspeed/torchrun)",
        description="Offline actor-critic training (eq. 11) with AdamW and the Table 12"
        " schedule; ZeRO stage, precision and batch from params. Multi-rank: deepspeed"
        " --num_gpus N $(which pac) train ... or torchrun --nproc_per_node N"
        " -m pac.cli train ...",
    )
    add_config_args(p)
    p.add_argument("--resume", action="store_true",
                   help="continue from the newest complete checkpoint in train.out_dir")
    p.add_argument("--init-from", default=None, metavar="DIR",
                   help="start from the weights of an inference checkpoint (RL fine-tuning)")
    p.add_argument("--data-root", default=None, metavar="DIR",
                   help="data folder with episodes/ and tokenizer/ (default: data.root)")
    p.add_argument("--parent-run-id", default=None, help="nest the MLflow run under this run")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser(
        "plan",
        help="memory per GPU for ZeRO 1/2/3 and FLOPs per update, before training",
        description="Parameter count on the meta device, DeepSpeed's ZeRO memory estimators"
        " and the FLOP counting of App. E.2 (compared with Table 17).",
    )
    add_config_args(p)
    p.add_argument("--scale", default=None, help="model scale (Table 4), overrides params")
    p.add_argument("--gpus", type=int, default=8, help="number of GPUs in total")
    p.add_argument("--gpu-mem", type=float, default=80.0, help="memory per GPU in GiB")
    p.add_argument("--gpus-per-node", type=int, default=8)
    p.add_argument("--batch", type=int, default=None,
                   help="samples per update for the FLOP count (default: train.global_batch)")
    p.add_argument("--deepspeed-tables", action="store_true",
                   help="also print DeepSpeed's own estimate tables (all offload options)")
    p.set_defaults(func=_cmd_plan)
