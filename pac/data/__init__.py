"""Data (App. C.3-C.4): episode store, dm_control generation, task tokenizer, lambda-sampler.

Names load lazily (pandas, torch, sentencepiece only when used) so `pac --help` stays fast.
"""

from __future__ import annotations

import importlib
from pathlib import Path

_WHERE = {
    "Episode": "pac.data.store",
    "EpisodeStore": "pac.data.store",
    "StoreError": "pac.data.store",
    "TaskTokenizer": "pac.data.tokenizer",
    "TrajectorySampler": "pac.data.sampler",
    "make_dataloader": "pac.data.sampler",
    "dataset_version": "pac.data.version",
    "task_horizons": "pac.data.version",
}
__all__ = [*_WHERE, "store_root", "tokenizer_path"]


def store_root(data_root: str | Path = "data") -> Path:
    """Where the episode store lives under `data.root` (default data/episodes)."""
    return Path(data_root) / "episodes"


def tokenizer_path(data_root: str | Path = "data") -> Path:
    """Where the SentencePiece model lives under `data.root` (default data/tokenizer/spm.model)."""
    return Path(data_root) / "tokenizer" / "spm.model"


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'pac.data' has no attribute {name!r}")
