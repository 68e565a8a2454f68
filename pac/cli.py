"""The `pac` command: one sub-command per pipeline stage, all fed by the same params file.

Each room of the package registers its own sub-commands (``register(subparsers)``); heavy
imports (torch, DeepSpeed, MLflow, dm_control) happen inside the command, so `pac --help` is fast.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys

from pac.cli_args import add_config_args, config_from_args
from pac.config import ConfigError

#: Modules that add sub-commands, in the order of the pipeline.
COMMAND_MODULES = [
    "pac.data.commands",
    "pac.model.commands",
    "pac.train.commands",
    "pac.evaluation.commands",
    "pac.rlft.commands",
    "pac.scaling.commands",
    "pac.review.commands",
]


def _cmd_config(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    if args.json:
        print(json.dumps(cfg.flat() if args.flat else cfg.to_dict(), indent=2, default=str))
    else:
        import yaml

        print(yaml.safe_dump(cfg.to_dict(), sort_keys=False), end="")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pac",
        description="PAC (Perceiver-Actor-Critic) pipeline: data, training, evaluation, RLFT.",
    )
    # `deepspeed` and `torch.distributed.launch` put `--local_rank=N` / `--local-rank=N` before
    # the sub-command; the rank itself is read from LOCAL_RANK, which both launchers also set.
    parser.add_argument("--local_rank", "--local-rank", dest="local_rank", type=int,
                        default=None, help=argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    p = sub.add_parser("config", help="validate a params file and print the resolved settings")
    add_config_args(p)
    p.add_argument("--json", action="store_true", help="print JSON instead of YAML")
    p.add_argument("--flat", action="store_true", help="with --json: flattened section.key names")
    p.set_defaults(func=_cmd_config)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.local_rank is not None:
        os.environ.setdefault("LOCAL_RANK", str(args.local_rank))
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except ConfigError as exc:
        print(f"pac: invalid params: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
