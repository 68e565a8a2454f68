"""The `pac` command: one sub-command per pipeline stage, all fed by the same params file.

Each room of the package registers its own sub-commands (``register(subparsers)``); heavy
imports (torch, DeepSpeed, MLflow, dm_control) happen inside the command, so `pac --help` is fast.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys

from pac.config import ConfigError, load_config

#: Modules that add sub-commands, in the order of the pipeline.
COMMAND_MODULES = [
    "pac.data.commands",
    "pac.model.commands",
    "pac.train.commands",
    "pac.eval_commands",
    "pac.rlft_commands",
    "pac.scaling_commands",
    "pac.report_commands",
]


def add_config_args(parser: argparse.ArgumentParser) -> None:
    """The common `--params FILE` and `--set KEY=VALUE` options of every sub-command."""
    parser.add_argument(
        "--params", default=None, help="params YAML file (default: params/default.yaml)"
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one setting, e.g. --set loss.alpha=1.0 (repeatable)",
    )


def config_from_args(args: argparse.Namespace):
    return load_config(args.params, args.overrides)


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
