"""The options every `pac` sub-command shares, and the params they resolve to.

The room faces (``pac/<room>/commands.py``) import these; `pac/cli.py` imports the faces, so the
helpers live here rather than in `pac/cli.py`.
"""

from __future__ import annotations

import argparse

from pac.config import load_config


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
