"""A dataset written by the real lerobot package (0.4.4, benchmarks/lerobot_env.sh) -> `pac
ingest` -> the store: values equal to what lerobot was given, frames within the codec's
tolerance (mean absolute error < 3 of 255 per frame, AV1 at lerobot's defaults).

The robot (14-value state, 7 joint targets in radians, three instructions) is no task of
pac/tasks.py: until embodiments and tasks are declared in params, the test registers one
TaskSpec per instruction and the recording's control rate, as tests/data/test_ogbench.py does.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import pac.rlft.ingest.lerobot as lerobot_reader
from pac.data import EpisodeStore, store_root
from pac.tasks import TASKS, TaskSpec

REPO = Path(__file__).resolve().parents[3]
SIDE = REPO / "benchmarks" / ".lerobot"
needs_lerobot = pytest.mark.skipif(
    not (SIDE / "lerobot").is_dir(),
    reason="the lerobot side environment is absent: run bash benchmarks/lerobot_env.sh")
MAE = 3.0


def _pac_ingest(*args: str) -> int:
    from pac.cli import main

    return main(["ingest", *args, "--no-track", "--no-dvc"])


@needs_lerobot
def test_dataset_written_by_lerobot_is_stored_with_its_camera(tmp_path, monkeypatch):
    env = os.environ | {"PYTHONPATH": f"{SIDE}{os.pathsep}{REPO}"}
    subprocess.run([sys.executable, str(REPO / "benchmarks" / "lerobot_write.py"),
                    str(tmp_path / "written")], check=True, env=env, cwd=REPO,
                   capture_output=True, timeout=300)
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        from lerobot_write import ACTION, ACTION_RANGE, FPS, INSTRUCTIONS, STATE, STEPS
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    truth = np.load(tmp_path / "written" / "truth.npz")
    for text in INSTRUCTIONS:
        monkeypatch.setitem(TASKS, text, TaskSpec(
            text, *text.split("."), STATE, ACTION, action_low=-ACTION_RANGE,
            action_high=ACTION_RANGE, success_reward=1.0, success_window=0.0))
    monkeypatch.setattr(lerobot_reader, "expected_fps", lambda _task: (FPS, 1.0 / FPS, 1))
    landing, data_root = tmp_path / "landing", tmp_path / "data"
    landing.mkdir()
    (tmp_path / "written" / "robot_arm").rename(landing / "robot_arm")

    assert _pac_ingest(str(landing), "--data-root", str(data_root)) == 0

    store = EpisodeStore(store_root(data_root), verify=True)
    assert len(store.episodes) == len(STEPS)
    for e, steps in enumerate(STEPS):
        row = store.episodes[store.episodes["origin"] == f"robot_arm#episode_{e}"].iloc[0]
        shard = next(s for s in store.shards if s.key == row["shard"])
        part = slice(row["start"], row["start"] + row["length"])
        assert row["task"] == INSTRUCTIONS[e] and row["length"] == steps
        np.testing.assert_array_equal(shard.proprio[part], truth[f"state_{e}"])
        np.testing.assert_array_equal(shard.actions[part], truth[f"action_{e}"])
        assert np.abs(truth[f"action_{e}"]).max() > 1.0  # physical units, not [-1, 1]
        np.testing.assert_array_equal(shard.rewards[part], truth[f"reward_{e}"])
        # docs/rollout_format.md: next.done with the episode's only nonzero reward on its final
        # frame is a terminal success; an episode without reward ends by its time limit
        want = np.ones(steps, np.float32)
        want[-1] = 0.0 if truth[f"reward_{e}"][-1] else 1.0
        np.testing.assert_array_equal(shard.discounts[part], want)
        images = np.asarray(shard.images[part])
        assert images.shape == (steps, 1, 80, 80, 3)
        errors = np.abs(images[:, 0].astype(np.float64) - truth[f"frames_{e}"]).mean(
            axis=(1, 2, 3))
        assert errors.max() < MAE, (e, errors)
