"""A fuzz-style corpus of rollout files, written at test time (nothing binary is committed).

`write_corpus(folder)` writes valid rollout files and >= 30 malformed ones, and returns
{file name: expected rejection code} (None for files that must be accepted).
"""

from __future__ import annotations

import io
import json
import pickle
import zipfile
from pathlib import Path

import numpy as np

from pac.data.store import Episode
from pac.ingest import FORMAT, VERSION, validate_episode, write_rollout

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


def write_corpus(folder: Path, seed: int = 0) -> dict[str, str | None]:
    """Write the corpus into `folder`; returns {file name: expected code or None (valid)}."""
    folder.mkdir(parents=True, exist_ok=True)
    ep = make_episode(seed=seed, steps=12)
    T = len(ep.rewards)
    expected: dict[str, str | None] = {}

    def add(name: str, code: str | None, members: dict[str, bytes] | None = None,
            raw: bytes | None = None) -> None:
        path = folder / name
        if raw is not None:
            path.write_bytes(raw)
        else:
            write_zip(path, members or {})
        expected[name] = code

    # --- valid files: several episodes, float64 input, rewards computed from a success label
    for i in range(3):
        episode = make_episode(seed=seed + 100 + i, success=i == 1)
        write_rollout(folder / f"valid_{i}.npz", episode, {"robot": "synthetic", "episode": i})
        expected[f"valid_{i}.npz"] = None
    m = members_of(ep)
    m["proprio.npy"] = npy_bytes(ep.proprio.astype(np.float64))
    m["actions.npy"] = npy_bytes(ep.actions.astype(np.float64))
    add("valid_float64.npz", None, m)
    m = _with(make_episode(seed=seed + 200), rewards=None)
    m["meta.json"] = json.dumps(
        {"format": FORMAT, "version": VERSION, "task": TASK, "success": True}
    ).encode()
    add("valid_success_label_only.npz", None, m)
    valid_bytes = (folder / "valid_0.npz").read_bytes()

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
    return expected
