"""Robot-rollout ingestion (§4.3): landing folder -> validated episodes -> the episode store.

A robot (or its dm_control stand-in, ``pac rollout``) drops one file per episode into a landing
folder; ``pac ingest LANDING`` then

1. reads every candidate without executing code (no pickle): the project's own per-episode
   rollout files (``docs/rollout_format.md``) and LeRobotDataset v3.0 directories;
2. validates each episode (schema, dtypes, shapes against the task's spec in ``pac.tasks``,
   finite values, action range, non-empty, rewards present or computable, known task);
3. drops duplicates by content hash. The ledger of ingested hashes lives inside the store: the
   ``content_hash`` column of each shard's episode index, so it is written in the same atomic
   step (the shard rename) as the episodes it describes;
4. quarantines rejected files (moved to ``quarantine/`` next to a ``NAME.reason.txt``), commits
   the accepted episodes with source = rollout, round k (one atomic shard per task) and only
   then moves their originals to ``processed/``. Nothing is ever modified or deleted.

A crash (even SIGKILL) at any point leaves a consistent state: a shard is in the store with its
ledger entries or not at all, and originals stay in the landing folder until their episodes are
committed. Rerunning the same ingest finds committed episodes in the ledger (origin = the same
file) and only moves their files on: nothing is lost, nothing is added twice.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import pickletools
import time
import uuid
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pac.data.store import IMAGE_SHAPE, SOURCES, Episode, EpisodeStore, is_group_name
from pac.io import atomic_write, atomic_write_text
from pac.tasks import TASKS, TaskSpec

FORMAT = "pac-rollout"
VERSION = 1
SUFFIX = ".npz"
ROLLOUT_GROUP = "rollouts"  # the default store group of ingested robot episodes
MIN_STEPS = 2  # an episode needs a next state for the TD target (eq. 10)
MAX_MEMBER_BYTES = 1 << 30  # an archive member declaring more is refused before it is read
MAX_SNIFF_BYTES = 1 << 20  # bytes of a non-zip file read to name what it is
ACTION_TOLERANCE = 1e-5  # float round-off allowed outside [action_low, action_high]
QUARANTINE = "quarantine"
PROCESSED = "processed"
#: test hook: "STAGE:SECONDS" sleeps at STAGE (before_commit | after_commit) so a test can kill us
PAUSE_ENV = "PAC_INGEST_PAUSE"
_ARRAYS = ("proprio", "actions", "rewards", "discounts", "images")


class Rejected(ValueError):
    """An episode or file failed a check; `code` names the check, the message says why."""

    def __init__(self, code: str, detail: str):
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail


def content_hash(episode: Episode) -> str:
    """sha256 of the task and the float32 arrays: the same episode from any file -> same hash."""
    h = hashlib.sha256(episode.task.encode())
    for name in _ARRAYS:
        value = getattr(episode, name)
        if value is not None:
            value = np.ascontiguousarray(value)
            h.update(f"|{name}{value.shape}{value.dtype.str}|".encode())
            h.update(value.tobytes())
    return h.hexdigest()


# --- validation (shared by every input format) ---------------------------------------------------


def _float_array(name: str, value: Any, shape: tuple[int | None, ...]) -> np.ndarray:
    """`value` as float32 of `shape` (None = any length) or Rejected naming the problem."""
    arr = np.asarray(value)
    if arr.dtype.hasobject:
        raise Rejected("pickle", f"{name} holds Python objects; only numeric arrays are accepted")
    if arr.dtype.kind != "f":
        raise Rejected("dtype", f"{name} has dtype {arr.dtype}; expected float32 or float64")
    if arr.ndim != len(shape) or any(s is not None and s != a for s, a in zip(shape, arr.shape)):
        want = "[" + ", ".join("T" if s is None else str(s) for s in shape) + "]"
        raise Rejected("shape", f"{name} has shape {list(arr.shape)}; the task needs {want}")
    with np.errstate(over="ignore"):
        out = arr.astype(np.float32)
    bad = ~np.isfinite(out)
    if bad.any():
        first = np.argwhere(bad)[0].tolist()
        count = int(bad.sum())
        raise Rejected("non-finite", f"{name} has {count} NaN/inf value(s), first at {first}")
    return out


def sparse_rewards(spec: TaskSpec, num_steps: int, success: bool) -> np.ndarray:
    """Rewards computed from a success label alone: the success reward on the final window.

    ``pac.envs.is_success`` of the result equals `success`: one success definition everywhere.
    """
    rewards = np.zeros(num_steps, np.float32)
    if success:
        rewards[-max(1, math.ceil(spec.success_window * num_steps)) :] = 1.0
    return rewards


def validate_episode(
    task: Any,
    proprio: Any,
    actions: Any,
    rewards: Any = None,
    discounts: Any = None,
    images: Any = None,
    success: Any = None,
) -> Episode:
    """Check one episode against its task's spec; return it (float32 arrays) or raise Rejected.

    Rewards may be absent when a boolean `success` label is given (:func:`sparse_rewards`);
    absent discounts mean no termination inside the episode (all ones: a time-limit end).
    The episode's success is recomputed from its rewards (``pac.envs.is_success``).
    """
    from pac.envs import is_success

    if not isinstance(task, str) or not task:
        raise Rejected("task", f"task must be a non-empty string, got {task!r}")
    if task not in TASKS:
        raise Rejected("unknown-task", f"task {task!r} is not one of {', '.join(sorted(TASKS))}")
    spec = TASKS[task]
    acts = _float_array("actions", actions, (None, spec.num_actions))
    steps = acts.shape[0]
    if steps < MIN_STEPS:
        raise Rejected("empty", f"episode has {steps} step(s); at least {MIN_STEPS} are needed")
    obs = _float_array("proprio", proprio, (None, spec.num_proprio))
    if obs.shape[0] != steps:
        raise Rejected("length", f"proprio has {obs.shape[0]} steps but actions have {steps}")
    low, high = spec.action_low - ACTION_TOLERANCE, spec.action_high + ACTION_TOLERANCE
    outside = (acts < low) | (acts > high)
    if outside.any():
        t, i = np.argwhere(outside)[0].tolist()
        raise Rejected(
            "action-range",
            f"{int(outside.sum())} action value(s) outside [{spec.action_low:g},"
            f" {spec.action_high:g}], first actions[{t}, {i}] = {acts[t, i]:g}",
        )
    acts = np.clip(acts, spec.action_low, spec.action_high)
    if success is not None and not isinstance(success, (bool, np.bool_)):
        raise Rejected("meta", f"success must be true or false, got {success!r}")
    if rewards is None:
        if success is None:
            raise Rejected("rewards", "no rewards and no success label to compute them from")
        rew = sparse_rewards(spec, steps, bool(success))
    else:
        rew = _float_array("rewards", rewards, (steps,))
    disc = np.ones(steps, np.float32)
    if discounts is not None:
        disc = _float_array("discounts", discounts, (steps,))
        if ((disc < 0) | (disc > 1)).any():
            raise Rejected("discount-range", "discounts must lie in [0, 1]")
    imgs = None
    if images is not None:
        imgs = np.asarray(images)
        if imgs.dtype != np.uint8:
            raise Rejected("dtype", f"images have dtype {imgs.dtype}; expected uint8")
        if imgs.ndim != 5 or imgs.shape[0] != steps or imgs.shape[2:] != IMAGE_SHAPE:
            size = ", ".join(map(str, IMAGE_SHAPE))
            raise Rejected(
                "shape", f"images have shape {list(imgs.shape)}; expected [{steps}, cams, {size}]"
            )
    return Episode(
        task=task,
        proprio=obs,
        actions=acts,
        rewards=rew,
        discounts=disc,
        success=is_success(task, rew),
        images=imgs,
    )


# --- the project's per-episode rollout file (docs/rollout_format.md) -----------------------------


def write_rollout(path: str | Path, episode: Episode, meta: dict[str, Any] | None = None) -> Path:
    """Write one episode as a rollout file (a zip of .npy arrays + meta.json), atomically."""
    doc = {**(meta or {}), "format": FORMAT, "version": VERSION, "task": episode.task}
    doc.setdefault("success", bool(episode.success))

    def write(tmp: Path) -> None:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            zf.writestr("meta.json", json.dumps(doc, sort_keys=True, default=_json_scalar))
            for name in _ARRAYS:
                value = getattr(episode, name)
                if value is not None:
                    with zf.open(f"{name}.npy", "w", force_zip64=True) as fh:
                        np.lib.format.write_array(fh, np.ascontiguousarray(value))

    return atomic_write(Path(path), write)


def _json_scalar(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _is_pickle(data: bytes) -> bool:
    """True when `data` is a pickle opcode stream; pickletools only parses it, nothing runs."""
    if not data or data.startswith((b"PK", np.lib.format.MAGIC_PREFIX)):
        return False
    try:
        ops = list(pickletools.genops(data))
    except Exception:  # noqa: BLE001 - not a complete pickle: a cut protocol 2-5 one still counts
        return data[:1] == b"\x80" and data[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05")
    return bool(ops) and ops[-1][0].name == "STOP"


def _read_npy(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> np.ndarray:
    """Read one .npy member: header checked first (no objects, sane size), never unpickled."""
    name = info.filename
    if info.file_size > MAX_MEMBER_BYTES:
        raise Rejected("too-large", f"{name} declares {info.file_size} bytes > {MAX_MEMBER_BYTES}")
    data = zf.read(info)  # a CRC or length mismatch of a truncated archive raises here
    if _is_pickle(data):
        raise Rejected("pickle", f"{name} is a Python pickle, refused: unpickling executes code")
    fh = io.BytesIO(data)
    try:
        version = np.lib.format.read_magic(fh)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
        else:
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
    except ValueError as exc:
        raise Rejected("npy", f"{name} is not a valid .npy array: {exc}") from exc
    if dtype.hasobject:
        raise Rejected("pickle", f"{name} holds Python objects (a pickle), refused")
    count, payload = math.prod(shape), data[fh.tell() :]
    if len(payload) != count * dtype.itemsize:
        raise Rejected(
            "truncated",
            f"{name}: the header says {list(shape)} {dtype} ({count * dtype.itemsize} bytes),"
            f" the data has {len(payload)} bytes",
        )
    arr = np.frombuffer(payload, dtype=dtype, count=count)
    return arr.reshape(shape, order="F" if fortran else "C")


def _parse_meta(raw: bytes) -> dict[str, Any]:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Rejected(
            "encoding", f"meta.json is not valid UTF-8 ({exc.reason} at byte {exc.start})"
        ) from exc
    try:
        meta = json.loads(text)
    except json.JSONDecodeError as exc:
        raise Rejected("meta", f"meta.json is not valid JSON: {exc}") from exc
    if not isinstance(meta, dict):
        raise Rejected("meta", "meta.json must hold a JSON object")
    if meta.get("format") != FORMAT:
        raise Rejected("meta", f"meta.json format is {meta.get('format')!r}; expected {FORMAT!r}")
    if meta.get("version") != VERSION:
        raise Rejected("meta", f"format version {meta.get('version')!r}; this reads {VERSION}")
    if "task" not in meta:
        raise Rejected("missing", "meta.json has no 'task'")
    return meta


def read_rollout(path: str | Path) -> tuple[Episode, dict[str, Any]]:
    """Parse and validate one rollout file -> (episode, its meta.json); or raise Rejected."""
    path = Path(path)
    size = path.stat().st_size
    if size == 0:
        raise Rejected("empty", "the file is empty (0 bytes)")
    with open(path, "rb") as fh:
        head = fh.read(min(size, MAX_SNIFF_BYTES))
    if _is_pickle(head):
        raise Rejected("pickle", "the file is a Python pickle, refused: unpickling executes code")
    if head[:4] != b"PK\x03\x04":
        raise Rejected("not-a-rollout", f"not a rollout archive (a zip); it starts {head[:16]!r}")
    try:
        with zipfile.ZipFile(path) as zf:
            members = {i.filename: i for i in zf.infolist()}
            for required in ("meta.json", "proprio.npy", "actions.npy"):
                if required not in members:
                    raise Rejected("missing", f"required member {required} is missing")
            raw_meta = zf.read(members["meta.json"])
            arrays = {
                n: _read_npy(zf, members[f"{n}.npy"]) for n in _ARRAYS if f"{n}.npy" in members
            }
    except Rejected:
        raise
    except Exception as exc:  # noqa: BLE001 - zipfile/zlib raise many types for damaged files
        raise Rejected("truncated", f"corrupt or truncated archive: {exc}") from exc
    meta = _parse_meta(raw_meta)
    episode = validate_episode(
        meta["task"],
        arrays["proprio"],
        arrays["actions"],
        rewards=arrays.get("rewards"),
        discounts=arrays.get("discounts"),
        images=arrays.get("images"),
        success=meta.get("success"),
    )
    return episode, meta


# --- LeRobotDataset v3.0 -------------------------------------------------------------------------
#
# meta/info.json (codebase_version, fps, features), meta/tasks.parquet (task text -> task_index),
# meta/episodes/chunk-*/file-*.parquet (one row per episode), data/chunk-*/file-*.parquet (frames
# of several episodes per file). observation.state -> proprio, action -> actions, next.reward ->
# rewards (or next.success -> sparse rewards), next.done -> discounts = 1 - done. Camera videos
# are not read: the default model is proprioception-only (N^V = 0).

LEROBOT_COLUMNS = ("observation.state", "action", "episode_index", "frame_index", "task_index")
Parsed = tuple[Episode, dict[str, Any]]  # an episode and its metadata


def is_lerobot_dir(path: Path) -> bool:
    return path.is_dir() and (path / "meta" / "info.json").is_file()


def _lerobot_info(root: Path) -> dict[str, Any]:
    try:
        info = json.loads((root / "meta" / "info.json").read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise Rejected("lerobot-meta", f"meta/info.json is not valid UTF-8 JSON: {exc}") from exc
    if not isinstance(info, dict):
        raise Rejected("lerobot-meta", "meta/info.json must hold a JSON object")
    version = str(info.get("codebase_version", ""))
    if not version.startswith("v3."):
        raise Rejected(
            "lerobot-version",
            f"codebase_version {version or 'missing'!r}: only the LeRobotDataset v3.x layout is"
            " read (convert older datasets with lerobot's v2.1 -> v3.0 converter)",
        )
    fps = info.get("fps")
    if isinstance(fps, bool) or not isinstance(fps, (int, float)) or not fps > 0:
        raise Rejected("lerobot-meta", f"meta/info.json fps must be a positive number, not {fps!r}")
    features = info.get("features")
    if not isinstance(features, dict):
        raise Rejected("lerobot-meta", "meta/info.json has no 'features' mapping")
    for key in ("observation.state", "action"):
        feat = features.get(key)
        if not isinstance(feat, dict):
            raise Rejected("missing", f"meta/info.json features lack {key!r}")
        if feat.get("dtype") not in ("float32", "float64"):
            raise Rejected("dtype", f"feature {key} has dtype {feat.get('dtype')!r}; want float")
        shape = feat.get("shape")
        if not (isinstance(shape, list) and len(shape) == 1 and isinstance(shape[0], int)):
            raise Rejected("shape", f"feature {key} has shape {shape!r}; expected [n]")
    return info


def _lerobot_tasks(root: Path) -> dict[int, str]:
    """task_index -> task text (lerobot keeps the text as the DataFrame index, named 'task')."""
    import pandas as pd

    path = root / "meta" / "tasks.parquet"
    if not path.is_file():
        raise Rejected("lerobot-layout", "meta/tasks.parquet is missing")
    try:
        df = pd.read_parquet(path)
    except Exception as exc:  # noqa: BLE001 - any parquet failure is a bad file
        raise Rejected("lerobot-meta", f"meta/tasks.parquet is unreadable: {exc}") from exc
    if "task_index" not in df.columns:
        raise Rejected("lerobot-meta", "meta/tasks.parquet has no task_index column")
    texts = df["task"] if "task" in df.columns else df.index.to_series()
    tasks: dict[int, str] = {}
    for text, index in zip(texts, df["task_index"]):
        if isinstance(text, bytes):
            try:
                text = text.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise Rejected("encoding", f"task text {text!r} is not valid UTF-8") from exc
        tasks[int(index)] = str(text)
    return tasks


def _read_parquets(root: Path, pattern: str, columns: tuple[str, ...]):
    """All parquet files matching `pattern` as one pyarrow Table holding `columns`."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    files = sorted(root.glob(pattern))
    if not files:
        raise Rejected("lerobot-layout", f"no {pattern} files")
    try:
        table = pa.concat_tables([pq.read_table(f) for f in files], promote_options="permissive")
    except Exception as exc:  # noqa: BLE001 - truncated or mismatched parquet files
        raise Rejected("lerobot-data", f"{pattern}: unreadable parquet: {exc}") from exc
    missing = [c for c in columns if c not in table.column_names]
    if missing:
        raise Rejected("missing", f"{pattern}: missing column(s) {missing}")
    return table


def _column(table, name: str) -> np.ndarray:
    """A parquet column as numpy: scalars -> [N], lists of one length n -> [N, n]."""
    import pyarrow as pa
    import pyarrow.compute as pc

    col = table.column(name).combine_chunks()
    if col.null_count:
        raise Rejected("missing", f"column {name} has {col.null_count} null value(s)")
    if pa.types.is_fixed_size_list(col.type):
        return col.flatten().to_numpy(zero_copy_only=False).reshape(len(col), col.type.list_size)
    if pa.types.is_list(col.type) or pa.types.is_large_list(col.type):
        lengths = pc.list_value_length(col).to_numpy()
        if len(lengths) and (lengths != lengths[0]).any():
            raise Rejected("shape", f"column {name} has rows of different lengths")
        width = int(lengths[0]) if len(lengths) else 0
        return col.flatten().to_numpy(zero_copy_only=False).reshape(len(col), width)
    return col.to_numpy(zero_copy_only=False)


def read_lerobot(root: str | Path) -> list[tuple[str, Parsed | Rejected]]:
    """A LeRobotDataset v3.0 directory -> [(label, (episode, meta) or Rejected)] per episode.

    Dataset-wide problems (layout, info.json, tasks, unreadable parquet) raise Rejected for the
    whole directory; a problem of one episode rejects only that episode.
    """
    root = Path(root)
    info = _lerobot_info(root)
    tasks = _lerobot_tasks(root)
    index = _read_parquets(root, "meta/episodes/chunk-*/file-*.parquet", ("episode_index",))
    frames = _read_parquets(root, "data/chunk-*/file-*.parquet", LEROBOT_COLUMNS)
    cols = {name: _column(frames, name) for name in LEROBOT_COLUMNS}
    for name in ("next.reward", "next.done", "next.success"):
        if name in frames.column_names:
            cols[name] = _column(frames, name).reshape(len(frames), -1)[:, 0]
    lengths: dict[int, int] = {}
    if "length" in index.column_names:
        lengths = dict(zip(_column(index, "episode_index").tolist(),
                           _column(index, "length").tolist()))
    episode_of = cols["episode_index"].astype(np.int64)
    listed = set(_column(index, "episode_index").astype(np.int64).tolist())
    if not len(episode_of) and not listed:
        raise Rejected("empty", "the dataset holds no episodes")
    results: list[tuple[str, Parsed | Rejected]] = []
    for ep in sorted(set(episode_of.tolist()) | listed):
        label = f"{root.name}#episode_{ep}"
        try:
            parsed = _lerobot_episode(ep, np.flatnonzero(episode_of == ep), cols, tasks, lengths)
            parsed[1].update(fps=info["fps"], robot_type=info.get("robot_type"))
            results.append((label, parsed))
        except Rejected as exc:
            results.append((label, exc))
    return results


def _lerobot_episode(
    ep: int,
    rows: np.ndarray,
    cols: dict[str, np.ndarray],
    tasks: dict[int, str],
    lengths: dict[int, int],
) -> Parsed:
    if rows.size == 0:
        raise Rejected("empty", f"episode {ep} is listed in meta/episodes but has no frames")
    rows = rows[np.argsort(cols["frame_index"][rows], kind="stable")]
    if not np.array_equal(cols["frame_index"][rows], np.arange(rows.size)):
        raise Rejected("frames", f"episode {ep}: frame_index is not 0..{rows.size - 1}")
    if ep in lengths and lengths[ep] != rows.size:
        raise Rejected(
            "length", f"episode {ep}: meta/episodes says {lengths[ep]} frames, data has {rows.size}"
        )
    task_ids = np.unique(cols["task_index"][rows])
    if task_ids.size != 1:
        raise Rejected("task", f"episode {ep}: task_index changes within it: {task_ids.tolist()}")
    if int(task_ids[0]) not in tasks:
        raise Rejected("unknown-task", f"episode {ep}: task_index {int(task_ids[0])} is not in"
                       " meta/tasks.parquet")
    done = cols.get("next.done")
    success = None
    if "next.reward" not in cols and "next.success" in cols:
        success = bool(np.asarray(cols["next.success"][rows], dtype=bool).any())
    episode = validate_episode(
        tasks[int(task_ids[0])],
        cols["observation.state"][rows],
        cols["action"][rows],
        rewards=cols["next.reward"][rows] if "next.reward" in cols else None,
        discounts=None if done is None else 1.0 - np.asarray(done[rows], dtype=np.float32),
        success=success,
    )
    return episode, {"format": "lerobot-v3.0", "episode_index": int(ep)}


# --- the landing folder -> store ----------------------------------------------------------------


@dataclass
class IngestReport:
    """What one ingest did; `rejected` maps each rejected file / episode to its reason."""

    batch: str
    landing: str
    group: str
    round: int
    accepted: list[str] = field(default_factory=list)  # committed by this run
    already: list[str] = field(default_factory=list)  # committed by an earlier, interrupted run
    rejected: dict[str, str] = field(default_factory=dict)
    shards: list[str] = field(default_factory=list)
    successes: int = 0
    data_version: dict[str, Any] = field(default_factory=dict)

    @property
    def episodes_added(self) -> int:
        return len(self.accepted)

    @property
    def success_rate(self) -> float:
        return self.successes / len(self.accepted) if self.accepted else math.nan

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "episodes_added": self.episodes_added,
                "success_rate": None if math.isnan(self.success_rate) else self.success_rate}


def landing_items(landing: Path) -> list[Path]:
    """Candidates in a landing folder, sorted: files and folders, except hidden names
    (in-flight writes of a robot that writes ``.name`` then renames) and our own subfolders."""
    return sorted(
        p for p in landing.iterdir()
        if not p.name.startswith(".") and p.name not in (QUARANTINE, PROCESSED)
    )


def parse_item(path: Path) -> list[tuple[str, Parsed | Rejected]]:
    """One landing item -> its episodes: a rollout file gives one, a LeRobot dataset several."""
    if path.is_dir():
        if not is_lerobot_dir(path):
            return [(path.name, Rejected("not-a-rollout", "a folder without meta/info.json is"
                                         " not a LeRobotDataset v3.0"))]
        try:
            return read_lerobot(path)
        except Rejected as exc:
            return [(path.name, exc)]
    try:
        return [(path.name, read_rollout(path))]
    except Rejected as exc:
        return [(path.name, exc)]
    except OSError as exc:
        return [(path.name, Rejected("unreadable", str(exc)))]


def read_ledger(store: EpisodeStore) -> dict[str, str]:
    """content hash -> origin (file name or dataset#episode) of every ingested episode."""
    eps = store.episodes
    if "content_hash" not in eps.columns:
        return {}
    eps = eps[eps["content_hash"].notna()]
    return dict(zip(eps["content_hash"], eps["origin"]))


def _free_path(folder: Path, name: str) -> Path:
    """`folder/name`, or `folder/name.N` when taken (moves never overwrite anything)."""
    folder.mkdir(parents=True, exist_ok=True)
    dest, n = folder / name, 1
    while dest.exists() or dest.with_name(dest.name + ".reason.txt").exists():
        dest, n = folder / f"{name}.{n}", n + 1
    return dest


def quarantine(path: Path, reason: str, folder: Path) -> Path:
    """Move `path` into `folder` and write ``NAME.reason.txt`` beside it (reason first)."""
    dest = _free_path(folder, path.name)
    atomic_write_text(dest.with_name(dest.name + ".reason.txt"), reason.rstrip() + "\n")
    os.rename(path, dest)
    return dest


def _pause(stage: str) -> None:
    """Test hook (PAC_INGEST_PAUSE=STAGE:SECONDS): sleep at `stage` so a test can SIGKILL us."""
    spec = os.environ.get(PAUSE_ENV, "")
    if spec.partition(":")[0] == stage:
        print(f"ingest: pausing at {stage}", flush=True)
        time.sleep(float(spec.partition(":")[2] or 60))


def ingest(
    landing: str | Path,
    data_root: str | Path,
    *,
    group: str = ROLLOUT_GROUP,
    round_k: int = 0,
    source: str = "rollout",
) -> IngestReport:
    """Ingest every episode in `landing` into the store under `data_root` (group `group`).

    Returns the report; rejected items are in ``landing/quarantine``, committed originals in
    ``landing/processed`` (with the batch report ``ingest-<batch>.json``).
    """
    from pac.data import store_root

    landing = Path(landing)
    if not landing.is_dir():
        raise FileNotFoundError(f"landing folder {landing} does not exist")
    if round_k < 0:
        raise ValueError(f"round must be >= 0, got {round_k}")
    if not is_group_name(group):
        raise ValueError(f"invalid store group name {group!r} (letters, digits, _ . -)")
    if source not in SOURCES:
        raise ValueError(f"source {source!r} is not one of {', '.join(SOURCES)}")
    batch = time.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]
    report = IngestReport(batch, str(landing), group, round_k)
    store = EpisodeStore(store_root(data_root))
    ledger = read_ledger(store)
    seen: dict[str, str] = {}  # hash -> origin within this batch
    to_commit: list[Episode] = []
    moves: list[Path] = []  # originals to move to processed/ once their episodes are committed
    for item in landing_items(landing):
        outcomes = []
        for label, parsed in parse_item(item):
            if not isinstance(parsed, Rejected):
                episode, meta = parsed
                digest = content_hash(episode)
                if ledger.get(digest) == label:
                    outcomes.append((label, "already"))
                    continue
                first = ledger.get(digest) or seen.get(digest)
                if first is None:
                    seen[digest] = label
                    episode.source, episode.round = source, round_k
                    episode.extra = {"content_hash": digest, "origin": label, "batch": batch,
                                     "meta": json.dumps(meta, sort_keys=True, default=str)}
                    to_commit.append(episode)
                    outcomes.append((label, "accepted"))
                    continue
                where = "already in the store" if digest in ledger else "earlier in this batch"
                parsed = Rejected("duplicate", f"same content as {first} ({where})")
            outcomes.append((label, parsed))
        rejected = [(lb, r) for lb, r in outcomes if isinstance(r, Rejected)]
        report.rejected.update({lb: str(r) for lb, r in rejected})
        report.already += [lb for lb, r in outcomes if r == "already"]
        if len(rejected) == len(outcomes):
            quarantine(item, "\n".join(f"{lb}: {r}" for lb, r in rejected), landing / QUARANTINE)
            continue
        if rejected:  # a dataset with some bad episodes: list them; it goes to processed/
            note = _free_path(landing / QUARANTINE, item.name)
            atomic_write_text(note.with_name(note.name + ".reason.txt"), "".join(
                f"{lb}: {r}\n" for lb, r in rejected
            ) + f"(the dataset's other episodes were ingested; it is in {PROCESSED}/)\n")
        moves.append(item)
    _pause("before_commit")
    if to_commit:
        report.shards = store.append_episodes(group, to_commit)  # the atomic step (per task)
        report.accepted = [ep.extra["origin"] for ep in to_commit]
        report.successes = sum(bool(ep.success) for ep in to_commit)
    _pause("after_commit")
    for item in moves:
        os.rename(item, _free_path(landing / PROCESSED, item.name))
    from pac.data import dataset_version

    report.data_version = dataset_version(data_root)
    atomic_write_text(
        landing / PROCESSED / f"ingest-{batch}.json", json.dumps(report.to_dict(), indent=1)
    )
    return report


def log_ingest(tracker: Any, report: IngestReport) -> None:
    """Counts, success rate and data version of an ingest on an MLflow run (a pac Tracker)."""
    codes: dict[str, int] = {}
    for reason in report.rejected.values():
        code = reason.split(":", 1)[0]
        codes[code] = codes.get(code, 0) + 1
    metrics = {
        "ingest/episodes_added": report.episodes_added,
        "ingest/rejected": len(report.rejected),
        "ingest/already_ingested": len(report.already),
    } | {f"ingest/rejected_{code}": n for code, n in sorted(codes.items())}
    if report.accepted:
        metrics["ingest/success_rate"] = 100.0 * report.success_rate
    tracker.log_metrics(metrics, step=report.round)
    tracker.log_params(
        {"ingest.landing": report.landing, "ingest.group": report.group,
         "ingest.round": report.round, "ingest.batch": report.batch}
        | {f"data_version.{k}": v for k, v in report.data_version.items()}
    )
    batch_file = Path(report.landing) / PROCESSED / f"ingest-{report.batch}.json"
    if batch_file.is_file():
        tracker.log_artifact(batch_file, "ingest")


def dvc_track(path: str | Path) -> str:
    """Record the store folder `path` as a new DVC data version; returns what was done.

    A folder that a dvc.yaml stage writes (the `rlft` stage's rollouts) is recorded by
    ``dvc repro`` itself; any other folder inside a DVC repository gets ``dvc add``.
    """
    from dvc.exceptions import NotDvcRepoError
    from dvc.repo import Repo

    path = Path(path).resolve()
    existing = next(p for p in (path, *path.parents) if p.is_dir())
    try:
        root = Repo.find_root(str(existing))
    except NotDvcRepoError:
        return f"{path} is not inside a DVC repository: not DVC-tracked"
    with Repo(root) as repo:
        for out in repo.index.outs:
            if Path(out.fs_path).resolve() == path and out.stage.is_data_source is False:
                return f"{path} is written by dvc stage {out.stage.addressing}: repro records it"
        repo.add(str(path))
    meta = (path.parent / f"{path.name}.dvc").read_text()
    md5 = " ".join(line.strip() for line in meta.splitlines() if "md5" in line)
    return f"dvc add {path}: {md5}"
