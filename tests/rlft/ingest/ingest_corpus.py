"""A fuzz-style corpus of deliveries, written at test time (nothing binary is committed).

`rollout_cases()` and `lerobot_cases()` return {item name: Case}: how to write one landing item
(a rollout file or a LeRobotDataset v3.0 folder) with one defect, the reason code it must be
rejected with and which of its episodes are still good. `write_corpus(folder)` writes every
rollout-file case into one folder and returns {file name: expected code} (None: accepted).
"""

from __future__ import annotations

import io
import json
import os
import pickle
import stat
import struct
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pac.data.store import Episode
from pac.envs import _control_timestep
from pac.rlft.ingest import FORMAT, VERSION, validate_episode, write_rollout

TASK = "point_mass.easy"  # N^P = 4, N^A = 2


def make_episode(
    task: str = TASK, steps: int = 12, seed: int = 0, success: bool = False
) -> Episode:
    """A synthetic but well-formed episode of `task` (random states, in-range actions)."""
    from pac.tasks import TASKS

    spec = TASKS[task]
    rng = np.random.default_rng(seed)
    rewards = rng.uniform(0.0, 0.5, steps).astype(np.float32)
    if success:
        rewards[-max(2, steps // 5) :] = 1.0
    return validate_episode(
        task,
        rng.normal(size=(steps, spec.num_proprio)).astype(np.float32),
        rng.uniform(-1, 1, size=(steps, spec.num_actions)).astype(np.float32),
        rewards=rewards,
    )


def npy_bytes(arr: np.ndarray, allow_pickle: bool = False) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, arr, allow_pickle=allow_pickle)
    return buf.getvalue()


def write_zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def members_of(episode: Episode, **meta_changes) -> dict[str, bytes]:
    """The members of a valid rollout file of `episode`, for hand-made variants."""
    meta = {"format": FORMAT, "version": VERSION, "task": episode.task, "success": episode.success}
    meta.update(meta_changes)
    out = {"meta.json": json.dumps(meta).encode()}
    for name in ("proprio", "actions", "rewards", "discounts"):
        out[f"{name}.npy"] = npy_bytes(getattr(episode, name))
    return out


def _with(episode: Episode, **arrays) -> dict[str, bytes]:
    m = members_of(episode)
    for name, value in arrays.items():
        if value is None:
            m.pop(f"{name}.npy")
        else:
            m[f"{name}.npy"] = npy_bytes(np.asarray(value))
    return m


@dataclass(frozen=True)
class Case:
    """One landing item: `build(path)` writes it; `code` is its rejection code (None: valid).

    `good` lists the labels of its episodes that must still be ingested (a partly bad dataset).
    """

    code: str | None
    build: Callable[[Path], object]
    good: tuple[str, ...] = ()


def write_corpus(folder: Path, seed: int = 0) -> dict[str, str | None]:
    """Write every rollout-file case into `folder`; returns {file name: expected code or None}."""
    folder.mkdir(parents=True, exist_ok=True)
    cases = rollout_cases(seed)
    for name, case in cases.items():
        case.build(folder / name)
    return {name: case.code for name, case in cases.items()}


def rollout_cases(seed: int = 0) -> dict[str, Case]:
    """Valid rollout files and malformed ones; the duplicates repeat ``valid_0.npz``."""
    ep = make_episode(seed=seed, steps=12)
    T = len(ep.rewards)
    cases: dict[str, Case] = {}

    def add(name: str, code: str | None, members: dict[str, bytes] | None = None,
            raw: bytes | None = None) -> None:
        if raw is not None:
            cases[name] = Case(code, lambda path: path.write_bytes(raw))
        else:
            cases[name] = Case(code, lambda path: write_zip(path, members or {}))

    # --- valid files: several episodes, float64 input, rewards computed from a success label
    for i in range(3):
        episode = make_episode(seed=seed + 100 + i, success=i == 1)
        cases[f"valid_{i}.npz"] = Case(None, lambda path, e=episode, i=i: write_rollout(
            path, e, {"robot": "synthetic", "episode": i}))
    m = members_of(ep)
    m["proprio.npy"] = npy_bytes(ep.proprio.astype(np.float64))
    m["actions.npy"] = npy_bytes(ep.actions.astype(np.float64))
    add("valid_float64.npz", None, m)
    m = _with(make_episode(seed=seed + 200), rewards=None)
    m["meta.json"] = json.dumps(
        {"format": FORMAT, "version": VERSION, "task": TASK, "success": True}
    ).encode()
    add("valid_success_label_only.npz", None, m)
    valid_bytes = _rollout_bytes(make_episode(seed=seed + 100),
                                 {"robot": "synthetic", "episode": 0})

    # --- broken containers
    add("empty.npz", "empty", raw=b"")
    add("truncated_half.npz", "truncated", raw=valid_bytes[: len(valid_bytes) // 2])
    add("truncated_tail.npz", "truncated", raw=valid_bytes[:-12])
    add("garbage.npz", "not-a-rollout", raw=np.random.default_rng(seed).bytes(512))
    add("notes.txt", "not-a-rollout", raw=b"robot log: gripper ok\n")
    add("pickle_payload.npz", "pickle", raw=pickle.dumps({"proprio": [1, 2, 3]}, protocol=4))
    add("pickle_protocol0.npz", "pickle", raw=pickle.dumps([1, 2], protocol=0))
    m = members_of(ep)
    m["proprio.npy"] = npy_bytes(np.array([{"x": 1}] * T, dtype=object), allow_pickle=True)
    add("pickle_object_array.npz", "pickle", m)
    m = members_of(ep)
    m["actions.npy"] = pickle.dumps(ep.actions.tolist(), protocol=4)
    add("pickle_raw_member.npz", "pickle", m)
    m = members_of(ep)
    m["rewards.npy"] = npy_bytes(ep.rewards)[:-8]  # header promises more than the data holds
    add("npy_truncated_member.npz", "truncated", m)
    m = members_of(ep)
    m["proprio.npy"] = b"\x93NUMPX" + npy_bytes(ep.proprio)[6:]
    add("npy_bad_magic.npz", "npy", m)

    # --- non-finite values
    bad = ep.proprio.copy()
    bad[3, 1] = np.nan
    add("nan_proprio.npz", "non-finite", _with(ep, proprio=bad))
    bad = ep.rewards.copy()
    bad[-1] = np.inf
    add("inf_rewards.npz", "non-finite", _with(ep, rewards=bad))
    bad = ep.actions.copy()
    bad[0, 0] = np.nan
    add("nan_actions.npz", "non-finite", _with(ep, actions=bad))
    bad = ep.discounts.copy()
    bad[2] = -np.inf
    add("inf_discounts.npz", "non-finite", _with(ep, discounts=bad))
    huge = ep.proprio.astype(np.float64) * 1e300  # finite in float64, inf as float32
    add("overflow_float64.npz", "non-finite", _with(ep, proprio=huge))

    # --- wrong shapes and dims
    add("wrong_proprio_dims.npz", "shape", _with(ep, proprio=np.zeros((T, 5), np.float32)))
    add("wrong_action_dims.npz", "shape", _with(ep, actions=np.zeros((T, 3), np.float32)))
    add("proprio_1d.npz", "shape", _with(ep, proprio=ep.proprio.reshape(-1)))
    add("actions_3d.npz", "shape", _with(ep, actions=ep.actions[:, None, :]))
    add("rewards_2d.npz", "shape", _with(ep, rewards=ep.rewards[:, None]))
    add("rewards_short.npz", "shape", _with(ep, rewards=ep.rewards[:-1]))
    add("length_mismatch.npz", "length", _with(ep, proprio=ep.proprio[:-2]))
    add("zero_steps.npz", "empty", _with(ep, proprio=ep.proprio[:0], actions=ep.actions[:0],
                                         rewards=ep.rewards[:0], discounts=ep.discounts[:0]))
    add("one_step.npz", "empty", _with(ep, proprio=ep.proprio[:1], actions=ep.actions[:1],
                                       rewards=ep.rewards[:1], discounts=ep.discounts[:1]))
    images = np.zeros((T, 1, 8, 8, 3), np.float32)
    add("images_float.npz", "dtype", {**members_of(ep), "images.npy": npy_bytes(images)})

    # --- wrong dtypes
    add("int_actions.npz", "dtype", _with(ep, actions=np.zeros((T, 2), np.int64)))
    add("complex_proprio.npz", "dtype", _with(ep, proprio=ep.proprio.astype(np.complex64)))
    add("string_rewards.npz", "dtype", _with(ep, rewards=np.array(["0.1"] * T)))
    add("bool_discounts.npz", "dtype", _with(ep, discounts=np.ones(T, bool)))

    # --- missing members / keys
    no_meta = {k: v for k, v in members_of(ep).items() if k != "meta.json"}
    add("missing_meta.npz", "missing", no_meta)
    add("missing_proprio.npz", "missing", _with(ep, proprio=None))
    add("missing_actions.npz", "missing", _with(ep, actions=None))
    m = members_of(ep)
    meta = json.loads(m["meta.json"])
    del meta["task"]
    m["meta.json"] = json.dumps(meta).encode()
    add("missing_task_key.npz", "missing", m)
    m = _with(ep, rewards=None)
    m["meta.json"] = json.dumps({"format": FORMAT, "version": VERSION, "task": TASK}).encode()
    add("no_rewards_no_success.npz", "rewards", m)

    # --- bad metadata
    add("unknown_task.npz", "unknown-task", members_of(ep, task="humanoid.fly"))
    add("empty_task.npz", "task", members_of(ep, task=""))
    add("numeric_task.npz", "task", members_of(ep, task=7))
    m = members_of(ep)
    m["meta.json"] = (
        b'{"format": "pac-rollout", "version": 1, "task": "point_mass.\xff\xfeeasy"}'
    )
    add("non_utf8_task.npz", "encoding", m)
    m = members_of(ep)
    m["meta.json"] = b"{task: point_mass.easy"
    add("meta_not_json.npz", "meta", m)
    m = members_of(ep)
    m["meta.json"] = b'["point_mass.easy"]'
    add("meta_is_list.npz", "meta", m)
    add("wrong_format_name.npz", "meta", members_of(ep, format="lerobot"))
    add("future_version.npz", "meta", members_of(ep, version=99))
    add("success_not_bool.npz", "meta", members_of(ep, success="yes"))

    # --- values out of range
    bad = ep.actions.copy()
    bad[5, 1] = 1.5
    add("action_out_of_range.npz", "action-range", _with(ep, actions=bad))
    add("action_scaled_100x.npz", "action-range", _with(ep, actions=ep.actions * 100))
    add("discount_out_of_range.npz", "discount-range", _with(ep, discounts=ep.discounts * 2))

    # --- duplicates: the same episode again under another name, and re-encoded as float64
    add("zz_duplicate_of_valid_0.npz", "duplicate", raw=valid_bytes)
    m = members_of(make_episode(seed=seed + 100))
    m["proprio.npy"] = npy_bytes(make_episode(seed=seed + 100).proprio.astype(np.float64))
    add("zz_duplicate_reencoded.npz", "duplicate", m)

    # --- hostile containers: nesting, size, lying sizes, member count
    m = members_of(ep)
    m["meta.json"] = b'{"format": "pac-rollout", "x": ' + b"[" * 200_000 + b"]" * 200_000 + b"}"
    add("meta_deeply_nested.npz", "too-large", m)
    m = members_of(ep)
    meta = json.loads(m["meta.json"]) | {"pad": " " * (1 << 21)}
    m["meta.json"] = json.dumps(meta).encode()  # 2 MiB, a few KB compressed
    add("meta_over_size_cap.npz", "too-large", m)
    add("member_lies_about_size.npz", "truncated",
        raw=lying_zip({**members_of(ep)}, "proprio.npy", 4 << 20, declared=1000))
    add("too_many_members.npz", "too-large",
        {**members_of(ep), **{f"extra_{i}.npy": b"" for i in range(80)}})
    m = members_of(ep)
    m["rewards.npy"] = npy_bytes(np.array(["0.5"] * T, dtype=object), allow_pickle=True)
    add("object_rewards.npz", "pickle", m)
    return cases


def _rollout_bytes(episode: Episode, meta: dict) -> bytes:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        return write_rollout(Path(tmp) / "x.npz", episode, meta).read_bytes()


def lying_zip(members: dict[str, bytes], name: str, real_size: int, declared: int) -> bytes:
    """A zip whose member `name` inflates to `real_size` zero bytes but declares `declared`.

    The deflate stream is made in 1 MiB blocks (this process never holds the inflated bytes);
    the sizes in the local header and the central directory are then overwritten.
    """
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        for other, data in members.items():
            if other != name:
                zf.writestr(other, data)
        with zf.open(name, "w") as fh:
            block = bytes(1 << 20)
            for _ in range(real_size // len(block)):
                fh.write(block)
    data = bytearray(buf.getvalue())
    encoded = name.encode()
    for sig, size_at, name_at in ((b"PK\x03\x04", 22, 30), (b"PK\x01\x02", 24, 46)):
        at = data.find(sig)
        while at != -1:
            if data[at + name_at: at + name_at + len(encoded)] == encoded:
                struct.pack_into("<I", data, at + size_at, declared)
            at = data.find(sig, at + 4)
    return bytes(data)


# --- LeRobotDataset v3.0 folders -----------------------------------------------------------------

def write_lerobot(
    root: Path,
    episodes: list[Episode],
    task_texts: list[str] | None = None,
    per_file: int = 3,
    version: str = "v3.0",
    frames_edit=None,
    rewards: bool = True,
    fps: float | None = None,
    vectors: str = "mixed",
    cameras: dict[str, tuple[str, list[np.ndarray]]] | None = None,
    video_per_file: int = 1000,
) -> Path:
    """A LeRobotDataset v3.0 folder: several episodes per data parquet file.

    `task_texts` (default: each episode's task) go to meta/tasks.parquet, indexed by the text
    as lerobot writes it. `frames_edit(episode_index, DataFrame) -> DataFrame` corrupts frames.
    `fps` defaults to the first task's control rate (dm_control timestep x action repeat).
    `vectors`: how state and action columns are stored: "mixed" (fixed-size lists in even
    files, plain lists in odd ones), "fixed" (fixed-size lists everywhere, also of size 1),
    "plain" (plain lists everywhere: what pandas writes, and the only layout in which pyarrow
    reads a null row back) or "scalar" (as lerobot 0.4.4 writes a shape-[1] feature: a plain
    float column; wider ones as in "mixed").
    `cameras`: key -> (codec, one [T, H, W, 3] uint8 array per episode), in info.json order:
    codec "png" is an `image` feature (PNG structs in the data parquet), any other an FFmpeg
    encoder of a `video` feature, `video_per_file` episodes back to back per mp4 (write_mp4).
    """
    fps = fps or 1.0 / _control_timestep(episodes[0].task)
    texts = task_texts or [ep.task for ep in episodes]
    tasks = list(dict.fromkeys(texts))
    n_state, n_action = episodes[0].proprio.shape[1], episodes[0].actions.shape[1]
    (root / "meta" / "episodes" / "chunk-000").mkdir(parents=True)
    (root / "data" / "chunk-000").mkdir(parents=True)
    info = {
        "codebase_version": version, "robot_type": "dm_control", "fps": fps,
        "total_episodes": len(episodes), "total_tasks": len(tasks), "chunks_size": 1000,
        "data_path": "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet",
        "features": {
            "observation.state": {"dtype": "float32", "shape": [n_state], "names": None},
            "action": {"dtype": "float32", "shape": [n_action], "names": None},
            "next.reward": {"dtype": "float32", "shape": [1], "names": None},
            "next.done": {"dtype": "bool", "shape": [1], "names": None},
            **{k: {"dtype": "int64", "shape": [1], "names": None}
               for k in ("episode_index", "frame_index", "index", "task_index")},
            "timestamp": {"dtype": "float32", "shape": [1], "names": None},
        },
    }
    cameras = cameras or {}
    for key, (codec, clips) in cameras.items():
        info["features"][key] = {"dtype": "image" if codec == "png" else "video",
                                 "shape": list(clips[0].shape[1:]),
                                 "names": ["height", "width", "channels"]}
    windows = {key: [w for first in range(0, len(clips), video_per_file) for w in write_mp4(
        root / "videos" / key / "chunk-000" / f"file-{first // video_per_file:03d}.mp4",
        clips[first: first + video_per_file], fps, codec)]
        for key, (codec, clips) in cameras.items() if codec != "png"}
    if not rewards:
        info["features"]["next.success"] = info["features"].pop("next.reward") | {"dtype": "bool"}
    (root / "meta" / "info.json").write_text(json.dumps(info, indent=2))
    pd.DataFrame({"task_index": range(len(tasks))}, index=pd.Index(tasks, name="task")).to_parquet(
        root / "meta" / "tasks.parquet"
    )
    index, rows_meta = 0, []
    for f, first in enumerate(range(0, len(episodes), per_file)):
        frames = []
        for e in range(first, min(first + per_file, len(episodes))):
            ep, steps = episodes[e], len(episodes[e].rewards)
            df = pd.DataFrame({
                "observation.state": list(ep.proprio.astype(np.float32)),
                "action": list(ep.actions.astype(np.float32)),
                "next.reward": ep.rewards.astype(np.float32),
                "next.done": np.arange(steps) == steps - 1,
                "episode_index": e, "frame_index": np.arange(steps),
                "timestamp": (np.arange(steps) / fps).astype(np.float32),
                "index": np.arange(index, index + steps), "task_index": tasks.index(texts[e]),
            })
            for key, (codec, clips) in cameras.items():
                if codec == "png":
                    df[key] = [{"bytes": png_bytes(img), "path": f"frame-{t:06d}.png"}
                               for t, img in enumerate(clips[e])]
            if not rewards:
                df = df.drop(columns=["next.reward"]).assign(
                    **{"next.success": np.arange(steps) == steps - 1 if ep.success else False})
            df = frames_edit(e, df) if frames_edit else df
            frames.append(df)
            rows_meta.append({"episode_index": e, "tasks": [texts[e]], "length": steps,
                              "data/chunk_index": 0, "data/file_index": f,
                              "dataset_from_index": index, "dataset_to_index": index + steps,
                              **{f"videos/{key}/{name}": value for key, w in windows.items()
                                 for name, value in zip(
                                     ("chunk_index", "file_index", "from_timestamp",
                                      "to_timestamp"), (0, e // video_per_file, *w[e]))}})
            index += steps
        table = pa.Table.from_pandas(pd.concat(frames, ignore_index=True), preserve_index=False)
        for name, n in (("observation.state", n_state), ("action", n_action)):
            if vectors == "scalar" and n == 1:
                col = table.column(name).combine_chunks().flatten()
            elif vectors == "fixed" or (vectors in ("mixed", "scalar") and f % 2 == 0):
                col = table.column(name).cast(pa.list_(pa.float32(), n))  # as lerobot writes
            else:  # accept plain lists as well
                continue
            table = table.set_column(table.schema.get_field_index(name), name, col)
        pq.write_table(table, root / "data" / "chunk-000" / f"file-{f:03d}.parquet")
    episodes_file = root / "meta" / "episodes" / "chunk-000" / "file-000.parquet"
    pd.DataFrame(rows_meta).to_parquet(episodes_file)
    return root


def write_mp4(path: Path, clips: list[np.ndarray], fps: float, codec: str,
              skip: dict[int, int] | None = None) -> list[tuple]:
    """Episodes' frames back to back in one mp4 (as lerobot concatenates them), encoded as
    lerobot encodes: yuv420p, crf 30, a keyframe every 2 frames. Returns each clip's
    (from_timestamp, to_timestamp) in seconds. `skip` {clip: k}: that clip's frames from its
    middle on come k frame periods late (a recording that dropped k frames)."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    rate = Fraction(fps).limit_denominator(1000)
    options = {"crf": "30", "g": "2"} | ({"preset": "12"} if codec == "libsvtav1" else {})
    windows, frame = [], 0
    with av.open(str(path), mode="w") as out:
        stream = out.add_stream(codec, rate=rate, options=options)
        stream.height, stream.width = clips[0].shape[1:3]
        stream.pix_fmt = "yuv420p"
        stream.time_base = 1 / rate
        for c, clip in enumerate(clips):
            late = (skip or {}).get(c, 0)
            windows.append((float(frame / rate), float((frame + len(clip) + late) / rate)))
            for t, img in enumerate(clip):
                vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
                frame += late if t == len(clip) // 2 else 0
                vf.pts, vf.time_base = frame, 1 / rate
                out.mux(stream.encode(vf))
                frame += 1
        out.mux(stream.encode())
    return windows


def png_bytes(img: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


def _lerobot_episodes(count: int = 3, steps: int = 8, task: str = TASK) -> list[Episode]:
    return [make_episode(task, steps=steps, seed=500 + i) for i in range(count)]


def _edit_json(root: Path, rel: str, **changes) -> None:
    path = root / rel
    path.write_text(json.dumps(json.loads(path.read_text()) | changes))


def _features(root: Path, **changes) -> None:
    info = json.loads((root / "meta" / "info.json").read_text())
    for key, value in changes.items():
        if value is None:
            info["features"].pop(key.replace("__", "."))
        else:
            info["features"][key.replace("__", ".")] = value
    (root / "meta" / "info.json").write_text(json.dumps(info))


def _tasks_table(root: Path, table: pd.DataFrame) -> None:
    table.to_parquet(root / "meta" / "tasks.parquet")


def _edit_frames(ep_edit: Callable[[int, pd.DataFrame], pd.DataFrame]):
    """A Case builder writing the standard 3-episode dataset through `ep_edit`."""
    return lambda path: write_lerobot(path, _lerobot_episodes(), per_file=2, frames_edit=ep_edit)


def _then(edit: Callable[[Path], object], **kw):
    """A Case builder writing the standard dataset, then applying `edit` to its folder."""
    def build(path: Path) -> None:
        write_lerobot(path, _lerobot_episodes(), per_file=2, **kw)
        edit(path)
    return build


def _on(episode: int, edit: Callable[[pd.DataFrame], pd.DataFrame]):
    return lambda e, df: edit(df) if e == episode else df


def _set(df: pd.DataFrame, column: str, row: int, value) -> pd.DataFrame:
    df = df.copy()
    df.at[row, column] = value
    return df


def _outside_symlink(root: Path, rel: str) -> None:
    """Replace `rel` by a symlink to a copy outside the landing folder."""
    target = root.parent.parent / f"outside-{root.name}.bin"
    os.replace(root / rel, target)
    os.symlink(target, root / rel)


def lerobot_cases() -> dict[str, Case]:
    """LeRobot datasets of 3 point_mass.easy episodes (2 data files), each with one defect."""
    def good(name: str, *eps: int) -> tuple[str, ...]:
        return tuple(f"{name}#episode_{e}" for e in eps)

    data0 = "data/chunk-000/file-000.parquet"
    cases = {
        # dataset-wide: the whole folder is rejected and quarantined
        "lr_zero_rows": Case("empty", _edit_frames(lambda e, df: df.iloc[:0])),
        "lr_info_deeply_nested": Case("too-large", _then(lambda r: (r / "meta/info.json")
                                      .write_text('{"a": ' + "[" * 200_000 + "]" * 200_000 + "}"))),
        "lr_info_over_size_cap": Case("too-large", _then(
            lambda r: _edit_json(r, "meta/info.json", pad=" " * (1 << 21)))),
        "lr_info_not_utf8": Case("encoding", _then(
            lambda r: (r / "meta/info.json").write_bytes(b'{"fps": "\xff\xfe"}'))),
        "lr_info_not_json": Case("lerobot-meta", _then(
            lambda r: (r / "meta/info.json").write_text("{not json"))),
        "lr_version_v2": Case("lerobot-version", _then(
            lambda r: _edit_json(r, "meta/info.json", codebase_version="v2.1"))),
        "lr_fps_zero": Case("lerobot-meta", _then(
            lambda r: _edit_json(r, "meta/info.json", fps=0))),
        "lr_task_index_nan": Case("lerobot-meta", _then(lambda r: _tasks_table(r, pd.DataFrame(
            {"task_index": [np.nan]}, index=pd.Index([TASK], name="task"))))),
        "lr_task_index_text": Case("lerobot-meta", _then(lambda r: _tasks_table(r, pd.DataFrame(
            {"task_index": ["zero"]}, index=pd.Index([TASK], name="task"))))),
        "lr_no_tasks": Case("lerobot-layout", _then(lambda r: (r / "meta/tasks.parquet").unlink())),
        "lr_no_data": Case("lerobot-layout", _then(
            lambda r: [p.unlink() for p in (r / "data").rglob("*.parquet")])),
        "lr_truncated_parquet": Case("lerobot-data", _then(
            lambda r: (r / data0).write_bytes((r / data0).read_bytes()[:200]))),
        "lr_done_as_text": Case("dtype", _edit_frames(
            lambda e, df: df.assign(**{"next.done": df["next.done"].map(str)}))),
        "lr_episode_index_text": Case("dtype", _edit_frames(
            lambda e, df: df.assign(episode_index=df["episode_index"].map(str)))),
        "lr_reward_as_text": Case("dtype", _edit_frames(
            lambda e, df: df.assign(**{"next.reward": df["next.reward"].map(str)}))),
        "lr_episode_index_null": Case("missing", _edit_frames(
            lambda e, df: df.assign(episode_index=df["episode_index"].astype("Int64"))
            .pipe(lambda d: _set(d, "episode_index", 2, pd.NA)) if e == 1 else df)),
        "lr_action_declared_9": Case("shape", _then(lambda r: _features(
            r, action={"dtype": "float32", "shape": [9], "names": None}))),
        "lr_state_declared_int": Case("dtype", _then(lambda r: _features(
            r, observation__state={"dtype": "int64", "shape": [4], "names": None}))),
        "lr_declared_column_absent": Case("missing", _then(lambda r: _features(
            r, observation__velocity={"dtype": "float32", "shape": [2], "names": None}))),
        "lr_no_state_feature": Case("missing", _then(lambda r: _features(
            r, observation__state=None))),
        "lr_symlinked_parquet": Case("symlink", _then(lambda r: _outside_symlink(r, data0))),
        "lr_symlinked_info": Case("symlink", _then(
            lambda r: _outside_symlink(r, "meta/info.json"))),
        "lr_fps_not_control_rate": Case("fps", _then(lambda r: None, fps=50.0)),
        "lr_no_meta_info": Case("not-a-rollout", _then(lambda r: (r / "meta/info.json").unlink())),
        # one bad episode (1): the others are ingested, the dataset is kept in quarantine/ too
        "lr_nan_reward": Case("non-finite", _edit_frames(_on(1, lambda df: _set(
            df, "next.reward", 3, np.nan))), good("lr_nan_reward", 0, 2)),
        "lr_nan_state": Case("non-finite", _edit_frames(_on(1, lambda df: _set(
            df, "observation.state", 2, np.array([0, np.nan, 0, 0], np.float32)))),
            good("lr_nan_state", 0, 2)),
        "lr_action_out_of_range": Case("action-range", _edit_frames(_on(1, lambda df: _set(
            df, "action", 2, np.array([1.7, 0.0], np.float32)))),
            good("lr_action_out_of_range", 0, 2)),
        "lr_missing_frame": Case("frames", _edit_frames(_on(1, lambda df: df.drop(index=5))),
                                 good("lr_missing_frame", 0, 2)),
        "lr_timestamp_backwards": Case("timestamp", _edit_frames(_on(1, lambda df: _set(
            df, "timestamp", 4, np.float32(0.0)))), good("lr_timestamp_backwards", 0, 2)),
        "lr_timestamp_wrong_rate": Case("timestamp", _edit_frames(_on(1, lambda df: df.assign(
            timestamp=df["timestamp"] * 2))), good("lr_timestamp_wrong_rate", 0, 2)),
        "lr_task_changes": Case("task", _edit_frames(_on(1, lambda df: _set(
            df, "task_index", 3, 1))), good("lr_task_changes", 0, 2)),
        "lr_done_nan": Case("non-finite", _float_done_nan, good("lr_done_nan", 0, 2)),
        "lr_done_float_declared_bool": Case("dtype", _edit_frames(lambda e, df: df.assign(
            **{"next.done": df["next.done"].astype(np.float32)}))),
        "lr_unknown_task": Case("unknown-task", lambda path: write_lerobot(
            path, _lerobot_episodes(), [TASK, "humanoid.fly", TASK], per_file=2),
            good("lr_unknown_task", 0, 2)),
        "lr_length_mismatch": Case("length", _then(lambda r: _episodes_meta(
            r, lambda d: _set(d, "length", 1, 99))), good("lr_length_mismatch", 0, 2)),
        "lr_listed_without_frames": Case("empty", _then(lambda r: _episodes_meta(
            r, lambda d: pd.concat([d, d.iloc[[0]].assign(episode_index=7)], ignore_index=True))),
            good("lr_listed_without_frames", 0, 1, 2)),
    }
    return cases


def _float_done_nan(path: Path) -> None:
    """next.done stored (and declared) as float32 0/1, with a NaN in episode 1."""
    def edit(e: int, df: pd.DataFrame) -> pd.DataFrame:
        df = df.assign(**{"next.done": df["next.done"].astype(np.float32)})
        return _set(df, "next.done", 1, np.nan) if e == 1 else df

    write_lerobot(path, _lerobot_episodes(), per_file=2, frames_edit=edit)
    _features(path, next__done={"dtype": "float32", "shape": [1], "names": None})


def _episodes_meta(root: Path, edit: Callable[[pd.DataFrame], pd.DataFrame]) -> None:
    path = root / "meta" / "episodes" / "chunk-000" / "file-000.parquet"
    edit(pd.read_parquet(path)).to_parquet(path)


def tree_digest(path: Path) -> dict[str, str]:
    """Every entry under `path` (or the file itself): file bytes' sha256, a link's target."""
    import hashlib

    def one(p: Path) -> str:  # never opens anything but a regular file (a FIFO would block)
        mode = os.lstat(p).st_mode
        if stat.S_ISLNK(mode):
            return "link:" + os.readlink(p)
        if stat.S_ISDIR(mode):
            return "dir"
        if not stat.S_ISREG(mode):
            return f"special:{stat.S_IFMT(mode)}"
        return hashlib.sha256(p.read_bytes()).hexdigest()

    if path.is_symlink() or not path.is_dir():
        return {".": one(path)}
    return {str(p.relative_to(path)): one(p) for p in sorted(path.rglob("*"))}
