"""LeRobotDataset v3.0 folders -> validated episodes, one outcome per episode.

meta/info.json (codebase_version, fps, features), meta/tasks.parquet (task text -> task_index),
meta/episodes/chunk-*/file-*.parquet (one row per episode), data/chunk-*/file-*.parquet (frames
of several episodes per file). observation.state -> proprio, action -> actions, next.reward ->
rewards (or next.success -> sparse rewards), the end flags (next.done with next.terminated,
next.truncated, success) -> discounts (:func:`discounts_from_done`). The parquet footers are
checked against MAX_DECODED_BYTES before any column is decoded.
Camera features (``video`` mp4 streams, ``image`` PNG columns) become the episode's images
(pac.rlft.ingest.video: decoded, resized, checked against the rows).

A problem of the whole dataset (layout, info.json, tasks, a column's type) rejects the folder; a
problem of one episode (values, frames, timestamps, its task) rejects only that episode, and any
unexpected exception while reading one episode becomes that episode's ``unreadable`` rejection.
No file inside the folder is read through a symlink.
"""

from __future__ import annotations

import math
import os
import stat
from pathlib import Path
from typing import Any

import numpy as np

from pac.data.store import Episode
from pac.rlft.ingest.checks import (
    MAX_JSON_BYTES,
    Rejected,
    describe,
    load_json,
    printable,
    quote,
    task_spec,
    validate_episode,
)
from pac.rlft.ingest.rollout_file import open_regular
from pac.rlft.ingest.video import camera_keys, episode_images, image_columns, video_index

LEROBOT_COLUMNS = ("observation.state", "action", "episode_index", "frame_index", "task_index")
INTEGER_COLUMNS = ("episode_index", "frame_index", "task_index")
FLAG_COLUMNS = ("next.done", "next.terminated", "next.truncated")  # end flags: bool, 0/1
SUCCESS_COLUMNS = ("success", "next.success")  # a success label per frame
MAX_TREE_ENTRIES = 100_000  # files and folders inside one dataset folder
#: decoded bytes the parquet files of one dataset may declare in their footers (all files
#: together); a dataset declaring more is refused before any column is decoded
MAX_DECODED_BYTES = 1 << 30
#: bytes per value of each parquet physical type once decoded (BYTE_ARRAY: its offsets; its
#: data is counted by the column chunk's uncompressed size)
_PHYSICAL_BYTES = {"BOOLEAN": 1, "INT32": 4, "INT64": 8, "INT96": 12, "FLOAT": 4, "DOUBLE": 8,
                   "BYTE_ARRAY": 8}
#: lerobot's own tolerance between consecutive timestamps and 1/fps (``tolerance_s``)
TIMESTAMP_TOLERANCE_S = 1e-4
FPS_TOLERANCE = 1e-3  # relative: 16.6667 vs 1/0.06 s passes, 16.5 vs 16.67 fps does not
#: info.json dtype -> the kind of numpy/arrow column it promises (video/image are not in parquet)
_FEATURE_KINDS = {
    **{f"float{b}": "f" for b in (16, 32, 64)},
    **{f"int{b}": "i" for b in (8, 16, 32, 64)},
    **{f"uint{b}": "i" for b in (8, 16, 32, 64)},
    "bool": "b",
    "string": "U",
}
Parsed = tuple[Episode, dict[str, Any]]  # an episode and its metadata


def discounts_from_done(
    done: np.ndarray | None = None,
    terminated: np.ndarray | None = None,
    truncated: np.ndarray | None = None,
    success: np.ndarray | None = None,
    rewards: np.ndarray | None = None,
) -> np.ndarray | None:
    """Discounts of one episode from its end flags (None: no flag at all, all ones).

    The one place where LeRobot's flags meet the store's discount d_t (0: the episode ends in a
    terminal state after step t, the TD target there is r_t alone; 1: it goes on, or was cut by
    a time limit, and the last transition, having no successor, gets no TD loss). First rule
    that applies:

    1. `next.terminated`: d_t = 1 - terminated_t (it says everything);
    2. `next.truncated`: a done frame that is not truncated is terminal;
    3. `success` / `next.success`: a done frame that is a success is terminal (the goal state);
    4. `next.done` alone, with rewards: when the done frame's reward is the episode's only
       nonzero reward (a sparse success reward on the final frame), that frame is terminal, so
       the reward reaches Q; otherwise every done is a time-limit truncation (dm_control's
       episodes, dense rewards). Our choice: LeRobot leaves the case open.

    `done` absent means LeRobot's convention of a done on the last frame only. NaN or inf in
    `done` / `terminated` pass through for the episode's finite check to reject.
    """
    flags = [np.asarray(f, dtype=np.float32) for f in (done, terminated, truncated, success)
             if f is not None]
    if any(not np.all(np.isfinite(f)) for f in flags):
        bad = next(f for f in flags if not np.all(np.isfinite(f)))
        return 1.0 - bad  # NaN / inf: the episode's validation rejects it as non-finite
    if terminated is not None:
        return 1.0 - np.asarray(terminated, dtype=np.float32)
    if done is None and truncated is None and success is None:
        return None
    steps = len(next(f for f in (done, truncated, success) if f is not None))
    ends = np.arange(steps) == steps - 1 if done is None else np.asarray(done, dtype=bool)
    if truncated is not None:
        terminal = ends & ~np.asarray(truncated, dtype=bool)
    elif success is not None:
        terminal = ends & np.asarray(success, dtype=bool)
    else:
        terminal = np.zeros(steps, dtype=bool)
        if rewards is not None and steps and ends[-1]:
            r = np.asarray(rewards, dtype=np.float64)
            if r[-1] != 0 and not np.any(r[:-1]) and ends.sum() == 1:
                terminal[-1] = True
    return np.where(terminal, 0.0, 1.0).astype(np.float32)


def is_lerobot_dir(path: Path) -> bool:
    """A real folder (not a symlink) with a ``meta/info.json`` entry (a link is found later)."""
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode) and os.path.lexists(
            path / "meta" / "info.json")
    except OSError:
        return False


def check_tree(root: Path) -> None:
    """Reject a dataset folder holding any symlink or special file (nothing is followed)."""
    count = 0
    for folder, dirs, files in os.walk(root, followlinks=False):
        for name in dirs + files:
            count += 1
            if count > MAX_TREE_ENTRIES:
                raise Rejected("too-large", f"more than {MAX_TREE_ENTRIES} files and folders")
            path = Path(folder) / name
            mode = os.lstat(path).st_mode
            rel = path.relative_to(root)
            if stat.S_ISLNK(mode):
                raise Rejected("symlink", f"{rel} is a symbolic link: not followed")
            if not (stat.S_ISDIR(mode) or stat.S_ISREG(mode)):
                raise Rejected("not-a-rollout", f"{rel} is not a regular file or folder")


def expected_fps(task: str) -> tuple[float, float, int]:
    """(control rate in Hz, control timestep in s, action repeat) of `task`: its embodiment's
    fps, or dm_control's timestep x action repeat for a simulated task."""
    from pac.envs import _control_timestep
    from pac.tasks import TASKS

    dt = _control_timestep(task)
    return 1.0 / dt, dt, TASKS[task].action_repeat


def _at_rate(fps: float, rate: float) -> bool:
    """lerobot stores fps as an integer: a rate that is not one also accepts its nearest."""
    return abs(fps - rate) <= FPS_TOLERANCE * rate or fps == round(rate)


def task_for(text: str, fps: float) -> str:
    """The task a dataset's task string names: the task of that name, else the task whose
    instruction it is; where several match (a built-in and a task declared at another rate),
    the one whose control rate is the dataset's fps."""
    from pac.tasks import TASKS

    candidates = TASKS.matching(text)
    if len(candidates) < 2:
        return candidates[0] if candidates else text  # an unknown text is rejected by its check
    at_rate = [t for t in candidates if _at_rate(fps, expected_fps(t)[0])]
    if len(at_rate) > 1:
        raise Rejected("task", f"task {quote(text)} at {fps:g} fps matches the tasks"
                       f" {', '.join(at_rate)}: give them distinct instructions in params")
    return at_rate[0] if at_rate else candidates[0]  # none: the fps check names the first


def _read_info(root: Path) -> dict[str, Any]:
    with open_regular(root / "meta" / "info.json") as fh:
        raw = fh.read(MAX_JSON_BYTES + 1)
    info = load_json(raw, "meta/info.json", "lerobot-meta")
    if not isinstance(info, dict):
        raise Rejected("lerobot-meta", "meta/info.json must hold a JSON object")
    version = str(info.get("codebase_version", ""))[:20]
    if not version.startswith("v3."):
        raise Rejected(
            "lerobot-version",
            f"codebase_version {version or 'missing'!r}: only the LeRobotDataset v3.x layout is"
            " read (convert older datasets with lerobot's v2.1 -> v3.0 converter)",
        )
    fps = info.get("fps")
    if isinstance(fps, bool) or not isinstance(fps, (int, float)) or not 0 < fps < math.inf:
        raise Rejected("lerobot-meta", f"meta/info.json fps must be a positive number, not"
                       f" {quote(fps)}")
    features = info.get("features")
    if not isinstance(features, dict):
        raise Rejected("lerobot-meta", "meta/info.json has no 'features' mapping")
    for key, feat in features.items():
        if not isinstance(feat, dict) or not isinstance(feat.get("dtype"), str):
            raise Rejected("lerobot-meta", f"feature {quote(key)} has no dtype")
        shape = feat.get("shape")
        if not (isinstance(shape, list) and all(
                isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape)):
            raise Rejected("shape", f"feature {quote(key)} has shape {quote(shape)}; expected a"
                           " list of sizes")
    for key in ("observation.state", "action"):
        feat = features.get(key)
        if feat is None:
            raise Rejected("missing", f"meta/info.json features lack {key!r}")
        if feat["dtype"] not in ("float32", "float64"):
            raise Rejected("dtype", f"feature {key} has dtype {quote(feat['dtype'])}; want float")
        if len(feat["shape"]) != 1:
            raise Rejected("shape", f"feature {key} has shape {feat['shape']}; expected [n]")
    return info


def _decoded_bytes(path: Path, what: str) -> int:
    """What decoding `path` would take, from its footer alone: every column chunk's value count
    times its decoded width, plus its uncompressed size (text, levels, dictionaries).

    Dictionary and run-length encodings make a 1 MB file of a billion equal values possible;
    counting values, not encoded bytes, measures the memory it would take before decoding it.
    Text is read dictionary-encoded (:func:`_read_parquet`): 8 bytes a value plus its pages.
    """
    import pyarrow.parquet as pq

    try:
        with open_regular(path) as fh:
            meta = pq.ParquetFile(fh).metadata
    except Rejected:
        raise
    except Exception as exc:  # noqa: BLE001 - truncated or mismatched parquet files
        raise Rejected("lerobot-data", f"{what}: unreadable parquet: {describe(exc)}") from exc
    total = 0
    for g in range(meta.num_row_groups):
        group = meta.row_group(g)
        for c in range(group.num_columns):
            chunk = group.column(c)
            width = _PHYSICAL_BYTES.get(chunk.physical_type, 0)
            if chunk.physical_type == "FIXED_LEN_BYTE_ARRAY":
                width = max(1, meta.schema.column(c).length or 1)
            total += chunk.num_values * width + chunk.total_uncompressed_size
    return total


def check_decoded_size(root: Path, files: list[Path]) -> None:
    """Refuse (`too-large`) a dataset whose parquet files declare more than MAX_DECODED_BYTES."""
    total = 0
    for path in files:
        total += _decoded_bytes(path, str(path.relative_to(root)))
        if total > MAX_DECODED_BYTES:
            raise Rejected(
                "too-large", f"its parquet files decode to more than {MAX_DECODED_BYTES >> 20}"
                f" MiB (the limit of one dataset, {path.relative_to(root)} and those before it"
                f" declare {total >> 20} MiB): split the recording into several datasets")


def _read_parquet(path: Path, what: str):
    """One parquet file as a pyarrow Table; text columns stay dictionary-encoded, so a value
    repeated a million times is held once (what :func:`_decoded_bytes` counts)."""
    import pyarrow.parquet as pq

    try:
        with open_regular(path) as fh:
            schema = pq.ParquetFile(fh).schema
            text = [schema.column(i).path for i in range(len(schema))
                    if schema.column(i).physical_type == "BYTE_ARRAY"]
            fh.seek(0)
            return pq.ParquetFile(fh, read_dictionary=text).read()
    except Rejected:
        raise
    except Exception as exc:  # noqa: BLE001 - truncated or mismatched parquet files
        raise Rejected("lerobot-data", f"{what}: unreadable parquet: {describe(exc)}") from exc


def _read_tasks(root: Path) -> dict[int, str]:
    """task_index -> task text (lerobot keeps the text as the DataFrame index, named 'task')."""
    path = root / "meta" / "tasks.parquet"
    if not os.path.lexists(path):
        raise Rejected("lerobot-layout", "meta/tasks.parquet is missing")
    try:
        df = _read_parquet(path, "meta/tasks.parquet").to_pandas()
    except Rejected as exc:
        raise Rejected("lerobot-meta", exc.detail) from exc
    if "task_index" not in df.columns:
        raise Rejected("lerobot-meta", "meta/tasks.parquet has no task_index column")
    index = df["task_index"].to_numpy()
    if index.dtype.kind not in "iu":
        bad = [i for i, v in enumerate(index) if not _is_integral(v)]
        if bad:
            raise Rejected("lerobot-meta", f"meta/tasks.parquet: task_index of row {bad[0]} is"
                           f" {quote(index[bad[0]])}, not an integer")
    texts = df["task"] if "task" in df.columns else df.index.to_series()
    tasks: dict[int, str] = {}
    for row, (text, i) in enumerate(zip(texts, index)):
        if isinstance(text, bytes):
            try:
                text = text.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise Rejected("encoding", f"meta/tasks.parquet: the task text of row {row} is"
                               " not valid UTF-8") from exc
        if not isinstance(text, str):
            raise Rejected("lerobot-meta", f"meta/tasks.parquet: the task of row {row} is"
                           f" {quote(text)}, not text")
        if int(i) in tasks and tasks[int(i)] != text:
            raise Rejected("lerobot-meta", f"meta/tasks.parquet gives task_index {int(i)} to two"
                           f" tasks, {quote(tasks[int(i)])} and {quote(text)}: which of them an"
                           " episode shows is unknown")
        tasks[int(i)] = text
    return tasks


def _is_integral(value: Any) -> bool:
    return (isinstance(value, (int, float, np.integer, np.floating))
            and not isinstance(value, (bool, np.bool_)) and math.isfinite(value)
            and float(value).is_integer())


def _read_parquets(root: Path, pattern: str):
    """All parquet files matching `pattern` as one pyarrow Table."""
    import pyarrow as pa

    files = sorted(root.glob(pattern))
    if not files:
        raise Rejected("lerobot-layout", f"no {pattern} files")
    tables = [_read_parquet(f, str(f.relative_to(root))) for f in files]
    try:
        return pa.concat_tables(tables, promote_options="permissive")
    except Exception as exc:  # noqa: BLE001 - files of one dataset with incompatible schemas
        raise Rejected("lerobot-data", f"{pattern}: files with mismatched columns:"
                       f" {describe(exc)}") from exc


def _is_list(arrow_type) -> bool:
    import pyarrow as pa

    return (pa.types.is_fixed_size_list(arrow_type) or pa.types.is_list(arrow_type)
            or pa.types.is_large_list(arrow_type))


def _kind(arrow_type) -> tuple[str, int | None]:
    """(numpy kind letter, width) of a column type: scalars width 1, lists their size or None."""
    import pyarrow as pa

    width: int | None = 1
    if pa.types.is_dictionary(arrow_type):
        arrow_type = arrow_type.value_type
    if pa.types.is_fixed_size_list(arrow_type):
        width, arrow_type = arrow_type.list_size, arrow_type.value_type
    elif pa.types.is_list(arrow_type) or pa.types.is_large_list(arrow_type):
        width, arrow_type = None, arrow_type.value_type
    if pa.types.is_dictionary(arrow_type):
        arrow_type = arrow_type.value_type
    if pa.types.is_floating(arrow_type):
        return "f", width
    if pa.types.is_integer(arrow_type):
        return "i", width
    if pa.types.is_boolean(arrow_type):
        return "b", width
    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
        return "U", width
    return "O", width


def _column(table, name: str) -> np.ndarray:
    """A parquet column as numpy: scalars -> [N], lists -> [N, n] (also n = 1); null floats
    become NaN.

    Null floats, and null rows of a float list (a whole missing ``observation.state`` row), are
    NaN for the per-episode finite check, which names episode and row and rejects only that
    episode; a null anywhere else (an index, a flag) is the dataset's `missing` value.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    col = table.column(name).combine_chunks()
    kind, _ = _kind(col.type)
    if not _is_list(col.type):
        if col.null_count:
            if kind != "f":
                raise _null(name, col)
            col = pc.fill_null(col, math.nan)
        return col.to_numpy(zero_copy_only=False)
    null_rows = col.is_null().to_numpy(zero_copy_only=False) if col.null_count else None
    if null_rows is not None:
        if kind != "f":
            raise _null(name, col)
        col = col.filter(pa.array(~null_rows))
    values = col.flatten()
    if values.null_count:
        if kind != "f":
            raise _null(name, col)
        values = pc.fill_null(values, math.nan)
    if pa.types.is_fixed_size_list(col.type):
        width = col.type.list_size
    else:
        lengths = pc.list_value_length(col).to_numpy()
        if len(lengths) and (lengths != lengths[0]).any():
            row = int(np.flatnonzero(lengths != lengths[0])[0])
            raise Rejected("shape", f"column {name} has rows of different lengths (row {row})")
        width = int(lengths[0]) if len(lengths) else 0
    dense = values.to_numpy(zero_copy_only=False).reshape(len(col), width)
    if null_rows is None:
        return dense
    out = np.full((len(null_rows), width), np.nan, dtype=dense.dtype)
    out[~null_rows] = dense
    return out


def _null(name: str, col) -> Rejected:
    """The `missing` rejection of a column with nulls where no NaN can stand for them."""
    if not col.null_count:  # the nulls are inside its lists
        return Rejected("missing", f"column {name} has null values inside its lists")
    first = int(np.flatnonzero(col.is_null().to_numpy(zero_copy_only=False))[0])
    return Rejected("missing", f"column {name} has {col.null_count} null value(s), first at"
                    f" row {first}")


def _check_columns(frames, features: dict[str, Any]) -> None:
    """Columns exist, with the dtype kind and width the features declare (lerobot's own rule)."""
    names = set(frames.column_names)
    missing = [c for c in LEROBOT_COLUMNS if c not in names]
    if missing:
        raise Rejected("missing", f"data parquet files lack column(s) {missing}")
    required = {"observation.state": "f", "action": "f", "next.reward": "f",
                **{c: "bif" for c in FLAG_COLUMNS}, "next.success": "bi", "success": "bi",
                "timestamp": "f",
                **{c: "i" for c in INTEGER_COLUMNS}}
    for name, kinds in required.items():
        if name in names:
            kind, _ = _kind(frames.schema.field(name).type)
            if kind not in kinds:
                want = {"f": "floats", "i": "integers"}.get(kinds, "bool or 0/1")
                raise Rejected("dtype", f"column {name} holds {frames.schema.field(name).type};"
                               f" expected {want}")
    for key, feat in features.items():
        want = _FEATURE_KINDS.get(feat["dtype"])
        if want is None:  # video / image: read by pac.rlft.ingest.video
            continue
        if key not in names:
            raise Rejected("missing", f"meta/info.json declares feature {quote(key)}; the data"
                           " parquet files have no such column")
        kind, width = _kind(frames.schema.field(key).type)
        if kind != want:
            raise Rejected("dtype", f"feature {quote(key)} is declared {feat['dtype']}; the column"
                           f" holds {frames.schema.field(key).type}")
        if width is None:
            width = int(_column(frames, key).shape[1]) if len(frames) else None
        declared = math.prod(feat["shape"])
        if width is not None and width != declared and not (width == 1 and declared == 0):
            raise Rejected("shape", f"feature {quote(key)} is declared with shape {feat['shape']};"
                           f" the column holds {width} value(s) per frame")


def read_lerobot(root: str | Path) -> list[tuple[str, Parsed | Rejected]]:
    """A LeRobotDataset v3.0 directory -> [(label, (episode, meta) or Rejected)] per episode.

    Dataset-wide problems (layout, info.json, tasks, columns, unreadable parquet) raise Rejected
    for the whole directory; a problem of one episode rejects only that episode.
    """
    root = Path(root)
    check_tree(root)
    info = _read_info(root)
    check_decoded_size(root, sorted(
        p for pattern in ("meta/tasks.parquet", "meta/episodes/chunk-*/file-*.parquet",
                          "data/chunk-*/file-*.parquet") for p in root.glob(pattern)
        if p.is_file()))
    tasks = _read_tasks(root)
    index = _read_parquets(root, "meta/episodes/chunk-*/file-*.parquet")
    frames = _read_parquets(root, "data/chunk-*/file-*.parquet")
    if "episode_index" not in index.column_names:
        raise Rejected("missing", "meta/episodes parquet files lack column episode_index")
    for name in ("episode_index", "length"):
        if name in index.column_names and _kind(index.schema.field(name).type)[0] != "i":
            raise Rejected("dtype", f"meta/episodes column {name} holds"
                           f" {index.schema.field(name).type}; expected integers")
    if len(frames) == 0:
        raise Rejected("empty", "the data parquet files hold no frames")
    _check_columns(frames, info["features"])
    cameras = camera_keys(info["features"])
    camera = (root, video_index(index, info["features"], cameras),
              image_columns(frames, info["features"], cameras))
    cols = {name: _column(frames, name) for name in LEROBOT_COLUMNS}
    for name in ("observation.state", "action"):  # lerobot writes a shape-[1] one as a scalar
        cols[name] = cols[name].reshape(len(frames), -1)
    for name in ("next.reward", *FLAG_COLUMNS, *SUCCESS_COLUMNS, "timestamp"):
        if name in frames.column_names:
            cols[name] = _column(frames, name).reshape(len(frames), -1)[:, 0]
    listed = _column(index, "episode_index").astype(np.int64)
    lengths: dict[int, int] = {}
    if "length" in index.column_names:
        lengths = dict(zip(listed.tolist(), _column(index, "length").tolist()))
    episode_of = cols["episode_index"].astype(np.int64)
    results: list[tuple[str, Parsed | Rejected]] = []
    for ep in sorted(set(episode_of.tolist()) | set(listed.tolist())):
        label = f"{printable(root.name, name=True)}#episode_{ep}"
        try:
            parsed = _episode(ep, np.flatnonzero(episode_of == ep), cols, tasks, lengths, info,
                              camera)
            results.append((label, parsed))
        except Rejected as exc:
            results.append((label, exc))
        except Exception as exc:  # noqa: BLE001 - one episode's failure must not stop the others
            results.append((label, Rejected("unreadable", f"episode {ep}: {describe(exc)}")))
    return results


def _episode(
    ep: int,
    rows: np.ndarray,
    cols: dict[str, np.ndarray],
    tasks: dict[int, str],
    lengths: dict[int, int],
    info: dict[str, Any],
    camera: tuple = (None, {}, {}),
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
    text = tasks[int(task_ids[0])]
    def column(name: str) -> np.ndarray | None:
        return cols[name][rows] if name in cols else None

    labels = next((column(c) for c in SUCCESS_COLUMNS if c in cols), None)
    success = None
    if "next.reward" not in cols and labels is not None:
        success = bool(np.asarray(labels, dtype=bool).any())
    try:
        task = task_for(text, float(info["fps"]))
        episode = validate_episode(
            task,
            cols["observation.state"][rows],
            cols["action"][rows],
            rewards=column("next.reward"),
            discounts=discounts_from_done(
                column("next.done"), column("next.terminated"), column("next.truncated"),
                labels, column("next.reward"),
            ),
            success=success,
            images=episode_images(camera[0], ep, rows, column("timestamp"), float(info["fps"]),
                                  camera[1], camera[2]),
        )
        _check_timing(task_spec(task).name, float(info["fps"]),
                      cols["timestamp"][rows] if "timestamp" in cols else None)
    except Rejected as exc:
        raise Rejected(exc.code, f"episode {ep}: {exc.detail}") from exc
    return episode, {"format": "lerobot-v3.0", "episode_index": int(ep), "fps": info["fps"],
                     "robot_type": info.get("robot_type")}


def _check_timing(task: str, fps: float, timestamps: np.ndarray | None) -> None:
    """The dataset's fps is the task's control rate; timestamps advance by 1/fps per frame.

    A different rate is refused rather than stored: the policy trained on it would be evaluated
    in dm_control at the task's own rate and horizon (docs/rollout_format.md, section 2).
    lerobot stores fps as an integer, so a rate that is not one (point_mass.easy: 16.67 fps)
    also accepts its nearest integer (17).
    """
    from pac.tasks import TASKS

    rate, dt, repeat = expected_fps(task)
    if not _at_rate(fps, rate):
        spec = TASKS[task]
        also = "" if round(rate) == rate else f" (or {round(rate)} as an integer)"
        if spec.simulator:
            how = (f" (dm_control timestep {1e3 * dt / repeat:g} ms x action repeat {repeat} ="
                   f" {1e3 * dt:g} ms per action)")
            need = 1.0 / (fps * dt / repeat)
            declare = (f"tasks: {{<name>: {{instruction: {spec.instruction}, simulator:"
                       f" {{dm_control: {spec.domain}.{spec.task}, action_repeat:"
                       f" {round(need)}}}}}}}"
                       if abs(need - round(need)) < 1e-6 and round(need) >= 1 else "tasks:")
        else:
            how = f" (embodiments.{spec.embodiment}.fps)"
            declare = "tasks: and embodiments:"
        raise Rejected(
            "fps",
            f"fps {fps:g} is not {task}'s control rate {rate:g} fps{also}{how}; resample the"
            f" recording to {rate:g} fps, or declare a task at {fps:g} fps in params"
            f" ({declare}; docs/data.md)",
        )
    if timestamps is None:
        return
    ts = np.asarray(timestamps, dtype=np.float64)
    if not np.isfinite(ts).all():
        row = int(np.argmin(np.isfinite(ts)))
        raise Rejected("non-finite", f"timestamp is NaN/inf at row {row}")
    steps = np.diff(ts)
    if (steps < 0).any():
        t = int(np.flatnonzero(steps < 0)[0]) + 1
        raise Rejected("timestamp",
                       f"timestamp decreases at row {t} ({ts[t - 1]:g} -> {ts[t]:g} s)")
    off = np.abs(steps - 1.0 / fps) > TIMESTAMP_TOLERANCE_S
    if off.any():
        t = int(np.flatnonzero(off)[0]) + 1
        raise Rejected("timestamp", f"timestamp advances by {steps[t - 1]:g} s at row {t}, not"
                       f" 1/fps = {1.0 / fps:g} s")
