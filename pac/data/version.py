"""`dataset_version(root)`: which data trained a model (DVC output hashes, for MLflow/Metaflow)."""

from __future__ import annotations

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
    data is not DVC-tracked).
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
                if path == root or root in path.parents:
                    out[o["path"]] = o.get("md5") or o.get("hash") or ""
        out["dvc_lock"] = str(lock)
    else:
        out["dvc_lock"] = None
    out["episodes_fingerprint"] = EpisodeStore(root / "episodes").fingerprint()
    return dict(sorted(out.items()))
