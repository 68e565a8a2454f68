"""Which data trained a model: `dataset_version(root)` (DVC output hashes, for MLflow/Metaflow)
and `task_horizons(store)` (the episode length per task, recorded with the checkpoint)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml


def _find_lock(start: Path) -> Path | None:
    for folder in [start, *start.parents]:
        if (folder / "dvc.yaml").is_file():
            return folder / "dvc.lock"
    return None


def dataset_version(root: str | Path = "data") -> dict[str, Any]:
    """DVC hashes of the data outputs under `root` (from dvc.lock) plus the store fingerprint.

    Keys: each DVC output path under `root` (relative to the repository, e.g.
    ``data/episodes/expert``) -> its md5 (ending in ``.dir`` for folders);
    ``episodes_fingerprint`` -> sha256 over the shard manifests actually present (covers appended
    rollout groups that DVC does not track); ``dvc_lock`` -> the lock file read (None when the
    data is not DVC-tracked). Only outputs present as dvc.lock names them are listed.
    """
    from pac.data.store import EpisodeStore

    root = Path(root).resolve()
    lock = _find_lock(root)
    out: dict[str, Any] = {}
    if lock is not None and lock.is_file():
        repo = lock.parent
        stages = (yaml.safe_load(lock.read_text()) or {}).get("stages", {})
        for stage in stages.values():
            for o in stage.get("outs", []):
                path = (repo / o["path"]).resolve()
                md5 = o.get("md5") or o.get("hash") or ""
                if (path == root or root in path.parents) and _built_by_dvc(path, md5):
                    out[o["path"]] = md5
        out["dvc_lock"] = str(lock)
    else:
        out["dvc_lock"] = None
    out["episodes_fingerprint"] = EpisodeStore(root / "episodes").fingerprint()
    return dict(sorted(out.items()))


def _built_by_dvc(path: Path, md5: str) -> bool:
    """Whether the out on disk can be the one dvc.lock names: a folder that exists, a file whose
    md5 matches (data built outside `dvc repro`, e.g. a robot's store and its tokenizer, is not
    reported under the lock's hashes)."""
    if md5.endswith(".dir") or path.is_dir():
        return path.is_dir()
    return path.is_file() and hashlib.md5(path.read_bytes()).hexdigest() == md5


def task_horizons(store: Any, groups: Iterable[str] | None = None) -> dict[str, int]:
    """{task: its longest episode} over the shards of `groups` (default: all) of `store` (an
    :class:`pac.data.store.EpisodeStore`).

    The horizon a policy trained on this data acts over: episodes are cut by their time limit
    (generated ones at ``data.episode_steps``, ingested ones at their recording's length), so
    the longest episode of a task is its time limit; an episode that terminates early is
    shorter and does not lower it (hence the maximum, not the mode or the mean).
    """
    wanted = None if groups is None else set(groups)
    out: dict[str, int] = {}
    for shard in store.shards:
        if (wanted is None or shard.group in wanted) and len(shard.index):
            out[shard.task] = max(out.get(shard.task, 0), int(shard.index["length"].max()))
    return dict(sorted(out.items()))
