"""The episode store: sharded, columnar, memory-mapped, append-only (schema: docs/data.md).

    <root>/<group>/<shard>/manifest.json      shapes, dtypes, sha256 of every file below
                           episodes.parquet   one row per episode (task, success, start, length ...)
                           proprio.npy        [S, N^P_task] float32   (S = steps in the shard)
                           actions.npy        [S, N^A_task] float32
                           rewards.npy        [S] float32
                           discounts.npy      [S] float32
                           images.npy         [S, cams, 80, 80, 3] uint8 (optional)
                           final_proprio.npy  [E, N^P_task] float32 (E = episodes; optional)
                           final_images.npy   [E, cams, 80, 80, 3] uint8 (optional)

How an episode ends is explicit: it *terminates* after its last step when that step's discount
is 0 (the TD target is r_{L-1}, nothing to bootstrap from); otherwise it was *truncated* (a time
limit) and, when the final observation o_L is known (``has_final``), the last transition
bootstraps from it like any other. dm_control episodes end by time limit: generation keeps o_L.

One shard holds episodes of one task (so every column has one width). A shard is written into a
hidden temp folder and renamed into place: readers never see half a shard, and a crash leaves
only a ``.tmp-*`` folder that the next writer removes once its writer process is gone. Arrays
open with ``np.load(mmap_mode="r")`` (never pickle), so reading a window touches only its pages,
not the whole dataset.
"""

from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import re
import shutil
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pac.io import atomic_write, atomic_write_text, sha256_file

FORMAT_VERSION = 1
SOURCES = ("sim", "real", "rollout")
IMAGE_SHAPE = (80, 80, 3)
#: per-episode columns of episodes.parquet written by the store itself
INDEX_COLUMNS = (
    "episode", "task", "group", "source", "round", "quality", "success", "start", "length",
    "return",
)
#: per-episode index columns that older shards may lack (with the value they then have)
OPTIONAL_COLUMNS = {"has_final": False}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


def is_group_name(name: str) -> bool:
    """A store group folder name: letters, digits, _ . -, starting with a letter or digit (so
    never a hidden or set-aside folder such as ``_rollouts.<stamp>``)."""
    return bool(_NAME.match(name))


class StoreError(ValueError):
    """The store or an episode is invalid; the message names the shard / episode and the check."""


@dataclass
class Episode:
    """One episode to append: per-step arrays (step t: o_t, a_t, r_t after a_t, discount d_t)."""

    task: str  # the instruction, e.g. "cartpole.balance"
    proprio: np.ndarray  # [L, N^P_task]
    actions: np.ndarray  # [L, N^A_task]
    rewards: np.ndarray  # [L]
    discounts: np.ndarray  # [L]; 0 where the episode terminates after step t
    success: bool = False
    quality: float = math.nan  # behaviour quality in [0, 1] where known (NaN = unknown)
    source: str = "sim"  # sim | real | rollout
    round: int = 0  # RL fine-tuning round k of a rollout (0 otherwise)
    images: np.ndarray | None = None  # [L, cams, 80, 80, 3] uint8
    extra: dict[str, Any] = field(default_factory=dict)  # extra index columns (str/int/float)
    #: o_L, the observation after the last action of a truncated episode (None: unknown, or the
    #: episode terminated); lets the last transition bootstrap
    final_proprio: np.ndarray | None = None  # [N^P_task]
    final_images: np.ndarray | None = None  # [cams, 80, 80, 3] uint8, with final_proprio

    @property
    def terminated(self) -> bool:
        """True when the episode ends in a terminal state (discount 0 after its last step)."""
        return float(np.asarray(self.discounts)[-1]) == 0.0

    def validate(self, where: str) -> None:
        """Check shapes, dtypes and values before anything is written."""
        if not isinstance(self.task, str) or not _NAME.match(self.task):
            raise StoreError(f"{where}: task {self.task!r} is not a valid instruction name")
        p, a = np.asarray(self.proprio), np.asarray(self.actions)
        length = p.shape[0] if p.ndim == 2 else -1
        if length < 1:
            raise StoreError(f"{where}: proprio must be [L>=1, N^P], got shape {p.shape}")
        if a.ndim != 2 or a.shape[0] != length:
            raise StoreError(f"{where}: actions must be [L={length}, N^A], got shape {a.shape}")
        for name in ("rewards", "discounts"):
            arr = np.asarray(getattr(self, name))
            if arr.shape != (length,):
                raise StoreError(f"{where}: {name} must be [L={length}], got shape {arr.shape}")
        for name in ("proprio", "actions", "rewards", "discounts"):
            if not np.all(np.isfinite(np.asarray(getattr(self, name), dtype=np.float64))):
                raise StoreError(f"{where}: {name} has NaN or infinite values")
        if self.images is not None:
            img = np.asarray(self.images)
            if img.ndim != 5 or img.shape[0] != length or img.shape[2:] != IMAGE_SHAPE:
                raise StoreError(
                    f"{where}: images must be [L={length}, cams, 80, 80, 3], got {img.shape}"
                )
            if img.dtype != np.uint8:
                raise StoreError(f"{where}: images must be uint8, got {img.dtype}")
        if self.final_proprio is not None:
            fp = np.asarray(self.final_proprio)
            if fp.shape != (p.shape[1],):
                raise StoreError(
                    f"{where}: final_proprio must be [N^P={p.shape[1]}], got shape {fp.shape}"
                )
            if not np.all(np.isfinite(fp.astype(np.float64))):
                raise StoreError(f"{where}: final_proprio has NaN or infinite values")
            if self.terminated:
                raise StoreError(
                    f"{where}: a terminated episode (last discount 0) has no final observation"
                    " to bootstrap from; give final_proprio only for truncated episodes"
                )
            if (self.images is None) != (self.final_images is None):
                raise StoreError(f"{where}: final_images must come with images (and only then)")
            if self.final_images is not None:
                fi = np.asarray(self.final_images)
                if fi.shape != np.shape(self.images)[1:] or fi.dtype != np.uint8:
                    raise StoreError(
                        f"{where}: final_images must be uint8 {np.shape(self.images)[1:]},"
                        f" got {fi.dtype} {fi.shape}"
                    )
        elif self.final_images is not None:
            raise StoreError(f"{where}: final_images without final_proprio")
        if self.source not in SOURCES:
            raise StoreError(f"{where}: source {self.source!r} is not one of {SOURCES}")
        if not (math.isnan(self.quality) or 0.0 <= self.quality <= 1.0):
            raise StoreError(f"{where}: quality {self.quality} is outside [0, 1]")
        if int(self.round) < 0:
            raise StoreError(f"{where}: round must be >= 0, got {self.round}")
        clash = set(self.extra) & set(INDEX_COLUMNS)
        if clash:
            raise StoreError(f"{where}: extra columns {sorted(clash)} clash with the index")


@dataclass
class Shard:
    """An opened shard: memory-mapped columns plus its episode index."""

    group: str
    name: str
    path: Path
    task: str
    index: pd.DataFrame
    proprio: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    discounts: np.ndarray
    images: np.ndarray | None
    final_proprio: np.ndarray | None = None  # [E, N^P] (rows valid where index.has_final)
    final_images: np.ndarray | None = None  # [E, cams, 80, 80, 3]

    @property
    def key(self) -> str:
        return f"{self.group}/{self.name}"


# --- writing -------------------------------------------------------------------------------------




def _save_npy(path: Path, array: np.ndarray) -> None:
    atomic_write(path, lambda fh: np.save(fh, array, allow_pickle=False))


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_shard(folder: Path, name: str, group: str, episodes: list[Episode]) -> Path:
    """Write one shard (episodes of one task) atomically as ``folder/name``; returns its path.

    Raises StoreError if ``folder/name`` exists already (shards are immutable).
    """
    if not _NAME.match(name) or not is_group_name(group):
        raise StoreError(f"invalid shard or group name: {group!r}/{name!r}")
    if not episodes:
        raise StoreError(f"{group}/{name}: a shard needs at least one episode")
    for i, ep in enumerate(episodes):
        ep.validate(f"{group}/{name} episode {i}")
    task = episodes[0].task
    widths = {(ep.task, np.shape(ep.proprio)[1], np.shape(ep.actions)[1]) for ep in episodes}
    cams = {None if ep.images is None else np.shape(ep.images)[1] for ep in episodes}
    if len(widths) != 1 or len(cams) != 1:
        raise StoreError(f"{group}/{name}: one shard holds one task with one shape; got {widths}")
    dest = Path(folder) / name
    if dest.exists():
        raise StoreError(f"shard {group}/{name} exists already; shards are never overwritten")
    tmp = temp_dir(folder, name)
    try:
        lengths = np.array([len(ep.rewards) for ep in episodes], dtype=np.int64)
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        columns: dict[str, np.ndarray] = {
            "proprio": np.concatenate([ep.proprio for ep in episodes]).astype(np.float32),
            "actions": np.concatenate([ep.actions for ep in episodes]).astype(np.float32),
            "rewards": np.concatenate([ep.rewards for ep in episodes]).astype(np.float32),
            "discounts": np.concatenate([ep.discounts for ep in episodes]).astype(np.float32),
        }
        if episodes[0].images is not None:
            columns["images"] = np.concatenate([ep.images for ep in episodes])
        has_final = np.array([ep.final_proprio is not None for ep in episodes], dtype=bool)
        if has_final.any():  # o_L of truncated episodes (zeros where unknown)
            final = np.zeros((len(episodes), columns["proprio"].shape[1]), np.float32)
            final[has_final] = [ep.final_proprio for ep in episodes if ep.final_proprio is not None]
            columns["final_proprio"] = final
            if "images" in columns:
                final_img = np.zeros((len(episodes), *columns["images"].shape[1:]), np.uint8)
                for i, ep in enumerate(episodes):
                    if ep.final_images is not None:
                        final_img[i] = ep.final_images
                columns["final_images"] = final_img
        files = {}
        for col, arr in columns.items():
            _save_npy(tmp / f"{col}.npy", arr)
            files[f"{col}.npy"] = {"shape": list(arr.shape), "dtype": str(arr.dtype)}
        index = pd.DataFrame(
            {
                "episode": np.arange(len(episodes), dtype=np.int64),
                "task": [ep.task for ep in episodes],
                "group": group,
                "source": [ep.source for ep in episodes],
                "round": np.array([int(ep.round) for ep in episodes], dtype=np.int64),
                "quality": np.array([float(ep.quality) for ep in episodes], dtype=np.float64),
                "success": np.array([bool(ep.success) for ep in episodes], dtype=bool),
                "start": starts.astype(np.int64),
                "length": lengths,
                "return": [float(np.sum(ep.rewards, dtype=np.float64)) for ep in episodes],
                "has_final": has_final,
            }
        )
        for key in sorted({k for ep in episodes for k in ep.extra}):
            index[key] = [ep.extra.get(key) for ep in episodes]
        atomic_write(tmp / "episodes.parquet", lambda fh: index.to_parquet(fh, index=False))
        files["episodes.parquet"] = {}
        for fname in files:
            files[fname]["sha256"] = sha256_file(tmp / fname)
        manifest = {
            "format_version": FORMAT_VERSION,
            "group": group,
            "task": task,
            "num_episodes": len(episodes),
            "num_steps": int(lengths.sum()),
            "num_proprio": int(columns["proprio"].shape[1]),
            "num_actions": int(columns["actions"].shape[1]),
            "cameras": int(columns["images"].shape[1]) if "images" in columns else 0,
            "files": files,
        }
        atomic_write_text(tmp / "manifest.json", json.dumps(manifest, indent=1, sort_keys=True))
        _fsync_dir(tmp)
        try:
            os.rename(tmp, dest)  # atomic; fails if another writer took the name meanwhile
        except OSError as exc:
            raise StoreError(f"shard {group}/{name} exists already") from exc
        _fsync_dir(dest.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


_TEMP = re.compile(r"^\.tmp-.*-(\d+)-[0-9a-f]{8}$")


def temp_dir(parent: Path, name: str) -> Path:
    """A fresh hidden folder ``.tmp-<name>-<pid>-<random>`` (invisible to readers)."""
    path = Path(parent) / f".tmp-{name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    path.mkdir(parents=True)
    return path


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temps(folder: Path) -> None:
    """Delete hidden temp folders whose writer process is gone (it crashed mid-write)."""
    if not Path(folder).is_dir():
        return
    for tmp in Path(folder).glob(".tmp-*"):
        match = _TEMP.match(tmp.name)
        if match and int(match.group(1)) != os.getpid() and not _alive(int(match.group(1))):
            shutil.rmtree(tmp, ignore_errors=True)


# --- reading -------------------------------------------------------------------------------------


def _check_manifest(path: Path, manifest: Any) -> None:
    need = ("format_version", "group", "task", "num_episodes", "num_steps", "num_proprio",
            "num_actions", "cameras", "files")
    if not isinstance(manifest, dict) or any(k not in manifest for k in need):
        raise StoreError(f"corrupted shard {path}: manifest.json lacks one of {need}")
    if manifest["format_version"] != FORMAT_VERSION:
        raise StoreError(
            f"shard {path}: format_version {manifest['format_version']} is not {FORMAT_VERSION}"
        )


def open_shard(path: Path, verify: bool = False) -> Shard:
    """Open and check one shard (structure always, sha256 checksums when `verify`)."""
    path = Path(path)
    try:
        manifest = json.loads((path / "manifest.json").read_text())
    except FileNotFoundError as exc:
        raise StoreError(f"corrupted shard {path}: manifest.json is missing") from exc
    except json.JSONDecodeError as exc:
        raise StoreError(f"corrupted shard {path}: manifest.json is not JSON ({exc})") from exc
    _check_manifest(path, manifest)
    files = manifest["files"]
    for fname, meta in files.items():
        if not (path / fname).is_file():
            raise StoreError(f"corrupted shard {path}: {fname} is missing")
        if verify and sha256_file(path / fname) != meta.get("sha256"):
            raise StoreError(f"corrupted shard {path}: {fname} fails its sha256 checksum")
    steps = manifest["num_steps"]
    expected = {
        "proprio.npy": (steps, manifest["num_proprio"]),
        "actions.npy": (steps, manifest["num_actions"]),
        "rewards.npy": (steps,),
        "discounts.npy": (steps,),
    }
    if manifest["cameras"]:
        expected["images.npy"] = (steps, manifest["cameras"], *IMAGE_SHAPE)
    optional = {"final_proprio.npy": (manifest["num_episodes"], manifest["num_proprio"])}
    if manifest["cameras"]:
        optional["final_images.npy"] = (manifest["num_episodes"], manifest["cameras"], *IMAGE_SHAPE)
    expected |= {f: shape for f, shape in optional.items() if f in files}
    arrays: dict[str, np.ndarray] = {}
    for fname, shape in expected.items():
        if fname not in files:
            raise StoreError(f"corrupted shard {path}: manifest lists no {fname}")
        try:
            arr = np.load(path / fname, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise StoreError(f"corrupted shard {path}: {fname} is unreadable ({exc})") from exc
        want = "uint8" if fname.endswith("images.npy") else "float32"
        if arr.shape != shape or str(arr.dtype) != want:
            raise StoreError(
                f"corrupted shard {path}: {fname} has shape {arr.shape} {arr.dtype},"
                f" manifest says {shape} {want}"
            )
        arrays[fname[:-4]] = arr
    try:
        index = pd.read_parquet(path / "episodes.parquet")
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for bad files
        raise StoreError(f"corrupted shard {path}: episodes.parquet is unreadable ({exc})") from exc
    missing = [c for c in INDEX_COLUMNS if c not in index.columns]
    if missing:
        raise StoreError(f"corrupted shard {path}: episodes.parquet lacks columns {missing}")
    for col, value in OPTIONAL_COLUMNS.items():
        if col not in index.columns:
            index[col] = value
    if index["has_final"].to_numpy(bool).any() and "final_proprio" not in arrays:
        raise StoreError(f"corrupted shard {path}: has_final episodes but no final_proprio.npy")
    starts, lengths = index["start"].to_numpy(), index["length"].to_numpy()
    ends = starts + lengths
    if (
        len(index) != manifest["num_episodes"]
        or np.any(lengths < 1)
        or (len(index) and (starts[0] != 0 or ends[-1] != steps or np.any(starts[1:] != ends[:-1])))
    ):
        raise StoreError(f"corrupted shard {path}: episode starts/lengths do not tile the steps")
    return Shard(
        group=manifest["group"], name=path.name, path=path, task=manifest["task"], index=index,
        proprio=arrays["proprio"], actions=arrays["actions"], rewards=arrays["rewards"],
        discounts=arrays["discounts"], images=arrays.get("images"),
        final_proprio=arrays.get("final_proprio"), final_images=arrays.get("final_images"),
    )


class EpisodeStore:
    """All shards under `root`, grouped by dataset group name (App. C.4, Table 6 rows)."""

    def __init__(self, root: str | Path, verify: bool = False, quarantine: bool = False):
        """Open every shard under `root`.

        verify: also check every file's sha256 (reads all data once).
        quarantine: move corrupted shards to ``<root>/_quarantine/`` (with a reason file) and go
            on, instead of raising StoreError naming the shard.
        """
        self.root = Path(root)
        self.shards: list[Shard] = []
        self.quarantined: list[str] = []
        if not self.root.is_dir():
            return
        for group_dir in sorted(p for p in self.root.iterdir() if p.is_dir()):
            if group_dir.name.startswith((".", "_")):
                continue
            for shard_dir in sorted(p for p in group_dir.iterdir() if p.is_dir()):
                if shard_dir.name.startswith("."):
                    continue
                try:
                    shard = open_shard(shard_dir, verify=verify)
                    if shard.group != group_dir.name:
                        raise StoreError(
                            f"corrupted shard {shard_dir}: manifest group {shard.group!r}"
                            f" is not its folder {group_dir.name!r}"
                        )
                except StoreError as exc:
                    if not quarantine:
                        raise
                    self._quarantine(shard_dir, str(exc))
                    continue
                self.shards.append(shard)

    def _quarantine(self, shard_dir: Path, reason: str) -> None:
        dest = self.root / "_quarantine" / shard_dir.parent.name / shard_dir.name
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.rename(shard_dir, dest)
        atomic_write_text(dest.parent / f"{shard_dir.name}.reason.txt", reason + "\n")
        self.quarantined.append(f"{shard_dir.parent.name}/{shard_dir.name}")

    # -- queries ----------------------------------------------------------------------------------

    @property
    def groups(self) -> list[str]:
        return sorted({s.group for s in self.shards})

    @property
    def episodes(self) -> pd.DataFrame:
        """One row per episode of the whole store, with its shard key."""
        frames = [s.index.assign(shard=s.key) for s in self.shards]
        if not frames:
            return pd.DataFrame(columns=[*INDEX_COLUMNS, "shard"])
        return pd.concat(frames, ignore_index=True)

    def summary(
        self, weights: dict[str, float] | None = None, trajectory_length: int = 5,
        by_task: bool = False,
    ) -> pd.DataFrame:
        """A Table-6-like summary per group (or per group and task): tasks, episodes,
        transitions, trajectories of `trajectory_length`, success rate, lambda and its share."""
        eps = self.episodes
        weights = dict(weights or {})
        keys = ["group", "task"] if by_task else ["group"]
        if eps.empty:
            return pd.DataFrame(columns=[*keys, "tasks", "episodes", "transitions", "success"])
        eps = eps.assign(trajectories=eps["length"].to_numpy())  # one window per step
        table = eps.groupby(keys, sort=False).agg(
            tasks=("task", "nunique"),
            episodes=("episode", "size"),
            transitions=("length", "sum"),
            trajectories=("trajectories", "sum"),
            success=("success", "mean"),
            mean_return=("return", "mean"),
            sources=("source", lambda x: ",".join(sorted(set(x)))),
        ).reset_index()
        table["success"] = (100 * table["success"]).round(1)
        table["mean_return"] = table["mean_return"].round(1)
        table["lambda"] = [weights.get(g, float("nan")) for g in table["group"]]
        total = sum(weights.get(g, 0.0) for g in table["group"].unique())
        table["P_group"] = (table["lambda"] / total).round(3) if total else float("nan")
        if by_task:  # Table 9's P_eff: uniform over the datasets of a group
            per_group = table.groupby("group")["task"].transform("size")
            table["P_eff"] = (table["lambda"] / total / per_group).round(3) if total else np.nan
        return table

    def num_transitions(self) -> int:
        return int(sum(s.rewards.shape[0] for s in self.shards))

    def fingerprint(self) -> str:
        """sha256 over every shard's manifest (which holds the files' sha256): the content id."""
        h = hashlib.sha256()
        for s in sorted(self.shards, key=lambda s: s.key):
            h.update(s.key.encode())
            h.update((s.path / "manifest.json").read_bytes())
        return h.hexdigest()

    # -- writing ----------------------------------------------------------------------------------

    def append_episodes(
        self, group: str, episodes: Iterable[Episode], max_shard_steps: int = 1_000_000
    ) -> list[str]:
        """Append episodes to `group` atomically per shard; returns the new shard keys.

        All episodes are validated before anything is written. Episodes are split by task (one
        shard per task and at most `max_shard_steps` steps); each shard appears whole or not at all.
        A full disk (ENOSPC) during any shard removes the shards this call already committed (and
        the group folder if this call created it) and raises StoreError: the store is unchanged.
        """
        episodes = list(episodes)
        if not is_group_name(group):
            raise StoreError(f"invalid group name {group!r}")
        if not episodes:
            raise StoreError(f"append_episodes({group!r}): no episodes given")
        for i, ep in enumerate(episodes):
            ep.validate(f"group {group} episode {i}")
        folder = self.root / group
        created = not folder.is_dir()
        folder.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(folder)
        keys: list[str] = []
        written: list[Path] = []
        try:
            for chunk in chunk_by_task(episodes, max_shard_steps):
                seq = len([p for p in folder.iterdir() if not p.name.startswith(".")])
                while True:
                    name = f"{chunk[0].task}-{seq:05d}"
                    try:
                        path = write_shard(folder, name, group, chunk)
                        break
                    except StoreError:
                        if not (folder / name).exists():
                            raise
                        seq += 1
                written.append(path)
                self.shards.append(open_shard(path))
                keys.append(f"{group}/{name}")
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
            self._roll_back(written, folder if created else None)
            raise StoreError(
                f"disk full while appending to group {group!r} of the store {self.root}: the"
                " store is unchanged (nothing of this append was kept); free space and append"
                " again"
            ) from exc
        return keys

    def _roll_back(self, shards: list[Path], group_dir: Path | None) -> None:
        """Remove shards committed by a failed append (renamed to a hidden temp name first,
        so readers never see half a shard) and the group folder the append created."""
        for path in shards:
            self.shards = [s for s in self.shards if s.path != path]
            doomed = temp_dir(path.parent, path.name)
            os.rename(path, doomed / path.name)
            shutil.rmtree(doomed, ignore_errors=True)
        if group_dir is not None:
            shutil.rmtree(group_dir, ignore_errors=True)  # only temp folders can be left in it


def chunk_by_task(episodes: list[Episode], max_steps: int) -> list[list[Episode]]:
    """Split episodes into shard-sized lists of one task (order kept within a task)."""
    by_task: dict[str, list[Episode]] = {}
    for ep in episodes:
        by_task.setdefault(ep.task, []).append(ep)
    chunks: list[list[Episode]] = []
    for task_eps in by_task.values():
        current: list[Episode] = []
        steps = 0
        for ep in task_eps:
            if current and steps + len(ep.rewards) > max_steps:
                chunks.append(current)
                current, steps = [], 0
            current.append(ep)
            steps += len(ep.rewards)
        chunks.append(current)
    return chunks
