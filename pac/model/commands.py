"""`pac model-info`: parameter counts per scale (Table 4)."""

from __future__ import annotations

import argparse
import json


def _cmd_model_info(args: argparse.Namespace) -> int:
    from pac.cli_args import config_from_args
    from pac.config import SCALES, ConfigError
    from pac.model.info import format_table, model_info, scale_config

    if args.scale and args.scale not in SCALES:
        raise ConfigError(f"--scale: unknown scale {args.scale!r}; allowed: {', '.join(SCALES)}")
    if args.all:
        rows = [model_info(scale_config(s)) for s in SCALES]
    elif args.scale:
        rows = [model_info(scale_config(args.scale))]
    else:
        rows = [model_info(config_from_args(args).model)]
    if args.json:
        print(json.dumps(rows if args.all else rows[0], indent=2))
    else:
        print(format_table(rows))
        if not args.all:
            for name, count in rows[0]["components"].items():
                print(f"  {name:<16} {count:>15,}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    from pac.cli_args import add_config_args

    p = sub.add_parser(
        "model-info",
        help="parameter count of the model (Table 4), built on the meta device",
        description="Without --scale: the params file's model. --scale NAME: that scale with its"
        " preset's input format (Table 5). --all: every scale.",
    )
    add_config_args(p)
    p.add_argument("--scale", default=None, help="a Table 4 scale: tiny, XXS, XS, S, M, L, card15B")
    p.add_argument("--all", action="store_true", help="a table of every scale")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_cmd_model_info)
