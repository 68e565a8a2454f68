"""Episodes -> a LeRobotDataset v3.0 folder: the layout ``pac ingest`` reads (rlft.ingest.lerobot).

Layout (lerobot's ``CODEBASE_VERSION = "v3.0"``): ``meta/info.json`` (fps, features, path
templates, totals), ``meta/tasks.parquet`` (task text as the index, ``task_index``),
``meta/episodes/chunk-000/file-000.parquet`` (one row per episode: its tasks, length and where its
frames are) and ``data/chunk-CCC/file-FFF.parquet`` holding the frames of several episodes.
Vector features are fixed-size float32 lists, as lerobot writes them. Per frame t:
``observation.state`` s_t, ``action`` a_t, ``next.reward`` r_t, ``next.done`` (true on the last
frame: a time-limit end), optionally ``next.terminated`` (d_t = 0: no bootstrap past t) and
``next.success``, plus lerobot's ``timestamp``, ``frame_index``, ``episode_index``, ``index`` and
``task_index``.

Frames are streamed to disk ``frames_per_file`` at a time, and the whole folder is built under a
hidden sibling and renamed into place on :meth:`LeRobotWriter.close`: a crash leaves no
half-written dataset. No camera videos are written (the default model reads proprioception only).
"""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

CODEBASE_VERSION = "v3.0"
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
CHUNKS_SIZE = 1000  # files per chunk folder (lerobot's default)
FRAMES_PER_FILE = 100_000  # ~15 MB of frames per data file for a 28-wide state


def _scalar(dtype: str) -> dict[str, Any]:
    return {"dtype": dtype, "shape": [1], "names": None}


class LeRobotWriter:
    """Write episodes one at a time into a new LeRobotDataset v3.0 folder at `root`.

    `root` must not exist yet. Use as a context manager (or call :meth:`close`): the dataset
    appears at `root` only when every episode is written; an exception discards it.
    """

    def __init__(
        self,
        root: str | Path,
        fps: float,
        state_size: int,
        action_size: int,
        robot_type: str = "unknown",
        terminated: bool = False,
        success: bool = False,
        frames_per_file: int = FRAMES_PER_FILE,
    ):
        self.root = Path(root)
        if os.path.lexists(self.root):
            raise FileExistsError(f"{self.root} already exists: the writer makes a new dataset")
        if not (isinstance(fps, (int, float)) and 0 < fps < math.inf):
            raise ValueError(f"fps must be a positive number, got {fps!r}")
        for name, size in (("state_size", state_size), ("action_size", action_size),
                           ("frames_per_file", frames_per_file)):
            if not isinstance(size, int) or size < 1:
                raise ValueError(f"{name} must be a positive integer, got {size!r}")
        self.fps = fps
        self.state_size, self.action_size = state_size, action_size
        self.robot_type = robot_type
        self.has_terminated, self.has_success = terminated, success
        self.frames_per_file = frames_per_file
        self._tmp = self.root.with_name(f".{self.root.name}.partial")
        shutil.rmtree(self._tmp, ignore_errors=True)
        (self._tmp / "meta" / "episodes" / "chunk-000").mkdir(parents=True)
        self._tasks: dict[str, int] = {}
        self._episodes: list[dict[str, Any]] = []
        self._buffer: list[dict[str, np.ndarray]] = []
        self._buffered = 0
        self._frames = 0
        self._file = 0
        self._closed = False

    # --- features -------------------------------------------------------------------------------
    def features(self) -> dict[str, dict[str, Any]]:
        """info.json's feature declarations: dtype, shape and names of every column written."""
        feats = {
            "observation.state": {"dtype": "float32", "shape": [self.state_size], "names": None},
            "action": {"dtype": "float32", "shape": [self.action_size], "names": None},
            "next.reward": _scalar("float32"),
            "next.done": _scalar("bool"),
        }
        if self.has_terminated:
            feats["next.terminated"] = _scalar("bool")
        if self.has_success:
            feats["next.success"] = _scalar("bool")
        feats["timestamp"] = _scalar("float32")
        for name in ("frame_index", "episode_index", "index", "task_index"):
            feats[name] = _scalar("int64")
        return feats

    # --- writing --------------------------------------------------------------------------------
    def add_episode(
        self,
        task: str,
        state: np.ndarray,
        action: np.ndarray,
        reward: np.ndarray,
        terminated: np.ndarray | None = None,
        success: np.ndarray | None = None,
    ) -> int:
        """Append one episode of T frames (s_t, a_t, r_t [, terminated_t, success_t]); its index."""
        if self._closed:
            raise RuntimeError("the writer is closed")
        if not isinstance(task, str) or not task:
            raise ValueError(f"task must be a non-empty string, got {task!r}")
        s = np.asarray(state, dtype=np.float32)
        a = np.asarray(action, dtype=np.float32)
        r = np.asarray(reward, dtype=np.float32)
        steps = len(s)
        if steps < 1:
            raise ValueError("an episode needs at least one frame")
        if s.shape != (steps, self.state_size):
            raise ValueError(f"state has shape {s.shape}; expected ({steps}, {self.state_size})")
        if a.shape != (steps, self.action_size):
            raise ValueError(f"action has shape {a.shape}; expected ({steps}, {self.action_size})")
        if r.shape != (steps,):
            raise ValueError(f"reward has shape {r.shape}; expected ({steps},)")
        flags = {}
        for name, value, wanted in (("next.terminated", terminated, self.has_terminated),
                                    ("next.success", success, self.has_success)):
            if (value is None) == wanted:
                state_of = "declared" if wanted else "not declared"
                raise ValueError(f"{name} is {state_of} for this dataset: pass it"
                                 f" {'for every' if wanted else 'for no'} episode")
            if value is not None:
                flag = np.asarray(value)
                if flag.shape != (steps,) or flag.dtype.kind not in "bi":
                    raise ValueError(f"{name} must be {steps} booleans, got {flag.dtype}"
                                     f" {flag.shape}")
                flags[name] = flag.astype(bool)
        for name, arr in (("state", s), ("action", a), ("reward", r)):
            if not np.isfinite(arr).all():
                raise ValueError(f"{name} holds NaN/inf values")
        task_index = self._tasks.setdefault(task, len(self._tasks))
        episode = len(self._episodes)
        frame = np.arange(steps, dtype=np.int64)
        done = frame == steps - 1
        self._buffer.append({
            "observation.state": s, "action": a, "next.reward": r, "next.done": done, **flags,
            "timestamp": (frame / self.fps).astype(np.float32), "frame_index": frame,
            "episode_index": np.full(steps, episode, np.int64),
            "index": np.arange(self._frames, self._frames + steps, dtype=np.int64),
            "task_index": np.full(steps, task_index, np.int64),
        })
        chunk, file = divmod(self._file, CHUNKS_SIZE)
        self._episodes.append({
            "episode_index": episode, "tasks": [task], "length": steps,
            "data/chunk_index": chunk, "data/file_index": file,
            "dataset_from_index": self._frames, "dataset_to_index": self._frames + steps,
            "meta/episodes/chunk_index": 0, "meta/episodes/file_index": 0,
        })
        self._frames += steps
        self._buffered += steps
        if self._buffered >= self.frames_per_file:
            self._flush()
        return episode

    def _flush(self) -> None:
        """Write the buffered episodes as the next data parquet file."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        if not self._buffer:
            return
        columns: dict[str, pa.Array] = {}
        for name in self.features():
            values = np.concatenate([ep[name] for ep in self._buffer])
            if values.ndim == 2:
                columns[name] = pa.FixedSizeListArray.from_arrays(
                    pa.array(values.reshape(-1)), values.shape[1])
            else:
                columns[name] = pa.array(values)
        chunk, file = divmod(self._file, CHUNKS_SIZE)
        path = self._tmp / DATA_PATH.format(chunk_index=chunk, file_index=file)
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table(columns), path)
        self._buffer, self._buffered = [], 0
        self._file += 1

    def close(self) -> Path:
        """Write the metadata and move the finished dataset to `root` (atomic rename)."""
        import pandas as pd

        if self._closed:
            return self.root
        if not self._episodes:
            raise ValueError("no episodes were written")
        self._flush()
        info = {
            "codebase_version": CODEBASE_VERSION,
            "robot_type": self.robot_type,
            "total_episodes": len(self._episodes),
            "total_frames": self._frames,
            "total_tasks": len(self._tasks),
            "chunks_size": CHUNKS_SIZE,
            "fps": self.fps,
            "splits": {"train": f"0:{len(self._episodes)}"},
            "data_path": DATA_PATH,
            "video_path": None,
            "features": self.features(),
        }
        meta = self._tmp / "meta"
        (meta / "info.json").write_text(json.dumps(info, indent=2) + "\n")
        tasks = pd.DataFrame({"task_index": list(self._tasks.values())},
                             index=pd.Index(list(self._tasks), name="task"))
        tasks.to_parquet(meta / "tasks.parquet")
        episodes = meta / "episodes" / "chunk-000" / "file-000.parquet"
        pd.DataFrame(self._episodes).to_parquet(episodes, index=False)
        os.replace(self._tmp, self.root)
        self._closed = True
        return self.root

    def abort(self) -> None:
        """Discard everything written so far (nothing appears at `root`)."""
        self._closed = True
        shutil.rmtree(self._tmp, ignore_errors=True)

    def __enter__(self) -> LeRobotWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
