"""Episode validation shared by every input format, and the reason codes of a rejection.

Every check raises :class:`Rejected` with a fixed code (``REASON_CODES``, the list documented in
docs/rollout_format.md) and a detail that names the array, the row and the column where known.
Details never quote raw file bytes: field values are quoted through :func:`quote`, which shortens
them, so a hostile file cannot smuggle its contents into reason files, logs or MLflow.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from typing import Any

import numpy as np

from pac.data.store import IMAGE_SHAPE, Episode
from pac.tasks import TASKS, TaskSpec

MIN_STEPS = 2  # an episode needs a next state for the TD target (eq. 10)
ACTION_TOLERANCE = 1e-5  # float round-off allowed outside [action_low, action_high]
MAX_JSON_BYTES = 1 << 20  # meta.json / meta/info.json larger than this are refused unread
MAX_JSON_DEPTH = 32  # nesting deeper than this is refused before json.loads recurses
ARRAYS = ("proprio", "actions", "rewards", "discounts", "images")

#: every code a rejection can carry, in the order docs/rollout_format.md lists them
REASON_CODES = {
    "empty": "no data: a 0-byte file, fewer than 2 steps, a dataset with no frames",
    "truncated": "a cut or corrupt archive, a member shorter than its header or failing its CRC",
    "not-a-rollout": "neither a rollout archive nor a LeRobot dataset folder (or a special file)",
    "symlink": "a symbolic link (never followed), also anywhere inside a dataset folder",
    "pickle": "a Python pickle, or a .npy member holding Python objects (never unpickled)",
    "npy": "a member that is not a valid .npy array",
    "too-large": "a member or JSON document over its size cap, or JSON nested too deeply",
    "missing": "a required member, key, column or value is absent",
    "meta": "meta.json is not a pac-rollout v1 JSON object, or a meta field has a wrong type",
    "encoding": "text that is not UTF-8",
    "task": "the task is empty, not a string, or changes within an episode",
    "unknown-task": "the task is neither built in nor declared in params",
    "dtype": "an array or column of the wrong type (integer, complex, text, ...)",
    "shape": "an array or column whose shape does not match the task spec or the declared feature",
    "length": "arrays of one episode with different step counts, or a LeRobot meta/episodes"
    " length that is not the episode's frame count",
    "frames": "LeRobot frame_index is not 0..T-1",
    "timestamp": "LeRobot timestamps decrease or do not advance by 1/fps",
    "fps": "the LeRobot fps is not the task's control rate",
    "non-finite": "NaN or inf values (the array, episode and row are named)",
    "action-range": "actions outside the task's action range",
    "discount-range": "discounts outside [0, 1]",
    "rewards": "neither rewards nor a success label to compute them from",
    "duplicate": "the same content as an episode already in the store or earlier in the batch",
    "lerobot-version": "a LeRobot layout older than v3.0",
    "lerobot-layout": "a LeRobot folder without its tasks, episodes or data parquet files",
    "lerobot-meta": "an invalid meta/info.json or meta/tasks.parquet",
    "lerobot-data": "an unreadable data or episodes parquet file",
    "video": "a LeRobot camera video missing, undecodable, or whose frames do not match the rows",
    "image": "a LeRobot camera image missing or undecodable",
    "unreadable": "any other failure while reading the item (the exception type is named)",
}


class Rejected(ValueError):
    """An episode or file failed a check; `code` names the check, the message says why."""

    def __init__(self, code: str, detail: str):
        if code not in REASON_CODES:
            raise ValueError(f"undocumented reason code {code!r}")
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail


def quote(value: Any, limit: int = 40) -> str:
    """repr() of a field value from a file, cut to `limit` characters (never the whole file)."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def content_hash(episode: Episode) -> str:
    """sha256 of the task and the float32 arrays: the same episode from any file -> same hash."""
    h = hashlib.sha256(episode.task.encode())
    for name in ARRAYS:
        value = getattr(episode, name)
        if value is not None:
            value = np.ascontiguousarray(value)
            h.update(f"|{name}{value.shape}{value.dtype.str}|".encode())
            h.update(value.tobytes())
    return h.hexdigest()


_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)


def load_json(raw: bytes, what: str, code: str) -> Any:
    """Parse a JSON document of at most MAX_JSON_BYTES and MAX_JSON_DEPTH levels, or Rejected.

    The depth is measured on the bytes (brackets outside strings) *before* ``json.loads``, whose
    recursion a 200,000-level document would otherwise exhaust. `code` is the reason code of a
    malformed document (``meta`` for meta.json, ``lerobot-meta`` for info.json).
    """
    if len(raw) > MAX_JSON_BYTES:
        raise Rejected("too-large", f"{what} has more than {MAX_JSON_BYTES} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Rejected(
            "encoding", f"{what} is not valid UTF-8 ({exc.reason} at byte {exc.start})"
        ) from exc
    depth = raw.count(b"[") + raw.count(b"{")  # an upper bound, exact enough for most files
    if depth > MAX_JSON_DEPTH:
        skeleton = np.frombuffer(_JSON_STRING.sub(b'""', raw), np.uint8)
        steps = ((skeleton == ord("[")) | (skeleton == ord("{"))).astype(np.int64)
        steps -= (skeleton == ord("]")) | (skeleton == ord("}"))
        depth = int(np.cumsum(steps).max()) if steps.size else 0
    if depth > MAX_JSON_DEPTH:
        raise Rejected("too-large", f"{what} is nested {depth} levels deep (> {MAX_JSON_DEPTH})")
    try:
        return json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise Rejected(code, f"{what} is not valid JSON: {exc}") from exc


_NAMED_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def printable(text: str, name: bool = False) -> str:
    """`text` as one printable line: control characters, line breaks and the undecodable bytes
    of a non-UTF-8 file name (Python's surrogate escapes) become backslash escapes.

    Every label and reason that reaches an output line, a reason file or the store goes through
    this, so a name holding a newline can neither split a reason nor forge another line. With
    `name`, a backslash is escaped too: two different names never print the same.
    """
    out = []
    for ch in text:
        code = ord(ch)
        if ch == "\\" and name:
            out.append("\\\\")
        elif 0xDC80 <= code <= 0xDCFF:  # os.fsdecode's escape of the raw byte code - 0xDC00
            out.append(f"\\x{code - 0xDC00:02x}")
        elif ch.isprintable() and not 0xD800 <= code <= 0xDFFF:
            out.append(ch)
        else:
            out.append(_NAMED_ESCAPES.get(ch) or (f"\\x{code:02x}" if code < 0x100 else
                                                  f"\\u{code:04x}" if code < 0x10000 else
                                                  f"\\U{code:08x}"))
    return "".join(out)


def is_utf8_name(name: str) -> bool:
    """False for a file name whose bytes are not UTF-8 (os.fsdecode kept them as surrogates)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def describe(exc: BaseException, limit: int = 160) -> str:
    """An unexpected exception as 'Type: message', cut to `limit` characters."""
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _where(index: list[int]) -> str:
    return f"row {index[0]}" + (f", column {index[1]}" if len(index) > 1 else "")


def float_array(name: str, value: Any, shape: tuple[int | None, ...]) -> np.ndarray:
    """`value` as float32 of `shape` (None = any length) or Rejected naming the problem."""
    arr = np.asarray(value)
    if arr.dtype.kind != "f":
        kind = "Python objects or text" if arr.dtype.hasobject else f"dtype {arr.dtype}"
        raise Rejected("dtype", f"{name} holds {kind}; expected float32 or float64")
    if arr.ndim != len(shape) or any(s is not None and s != a for s, a in zip(shape, arr.shape)):
        want = "[" + ", ".join("T" if s is None else str(s) for s in shape) + "]"
        raise Rejected("shape", f"{name} has shape {list(arr.shape)}; the task needs {want}")
    with np.errstate(over="ignore"):
        out = arr.astype(np.float32)
    bad = ~np.isfinite(out)
    if bad.any():
        first = np.argwhere(bad)[0].tolist()
        count = int(bad.sum())
        raise Rejected("non-finite",
                       f"{name} has {count} NaN/inf value(s), first at {_where(first)}")
    return out


def sparse_rewards(spec: TaskSpec, num_steps: int, success: bool) -> np.ndarray:
    """Rewards computed from a success label alone: the success reward on the final window.

    ``pac.envs.is_success`` of the result equals `success`: one success definition everywhere.
    """
    rewards = np.zeros(num_steps, np.float32)
    if success:
        rewards[-max(1, math.ceil(spec.success_window * num_steps)) :] = 1.0
    return rewards


def task_spec(task: Any) -> TaskSpec:
    """The spec of a task name read from a file, or Rejected (`task` / `unknown-task`)."""
    if not isinstance(task, str) or not task:
        raise Rejected("task", f"task must be a non-empty string, got {quote(task)}")
    if task not in TASKS:
        known = ", ".join(sorted(TASKS))
        raise Rejected("unknown-task", f"task {quote(task)} is not one of {known}")
    return TASKS[task]


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

    spec = task_spec(task)
    acts = float_array("actions", actions, (None, spec.num_actions))
    steps = acts.shape[0]
    if steps < MIN_STEPS:
        raise Rejected("empty", f"episode has {steps} step(s); at least {MIN_STEPS} are needed")
    obs = float_array("proprio", proprio, (None, spec.num_proprio))
    if obs.shape[0] != steps:
        raise Rejected("length", f"proprio has {obs.shape[0]} steps but actions have {steps}")
    low, high = spec.low, spec.high  # per dimension, the robot's units
    outside = (acts < low - ACTION_TOLERANCE) | (acts > high + ACTION_TOLERANCE)
    if outside.any():
        t, i = np.argwhere(outside)[0].tolist()
        names = spec.action_names or tuple(str(j) for j in range(spec.num_actions))
        counts = ", ".join(f"{names[j]}: {int(c)}" for j, c in enumerate(outside.sum(0)) if c)
        raise Rejected(
            "action-range",
            f"{int(outside.sum())} action value(s) outside the task's range (per dimension"
            f" {counts}), first actions[{t}, {i}] = {acts[t, i]:g} outside [{low[i]:g},"
            f" {high[i]:g}] (row {t})",
        )
    acts = np.clip(acts, low, high)
    if success is not None and not isinstance(success, (bool, np.bool_)):
        raise Rejected("meta", f"success must be true or false, got {quote(success)}")
    if rewards is None:
        if success is None:
            raise Rejected("rewards", "no rewards and no success label to compute them from")
        rew = sparse_rewards(spec, steps, bool(success))
    else:
        rew = float_array("rewards", rewards, (steps,))
    disc = np.ones(steps, np.float32)
    if discounts is not None:
        disc = float_array("discounts", discounts, (steps,))
        outside = (disc < 0) | (disc > 1)
        if outside.any():
            raise Rejected("discount-range", "discounts must lie in [0, 1], first outside at"
                           f" row {int(np.argmax(outside))}")
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
