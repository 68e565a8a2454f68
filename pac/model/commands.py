"""`pac model-info`: parameter counts per scale (Table 4)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    pass
