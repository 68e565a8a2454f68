"""pac.data.lerobot_writer: what it writes, pac ingest's LeRobot reader reads back exactly."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from pac.data.lerobot_writer import LeRobotWriter
from pac.envs import _control_timestep
from pac.rlft.ingest import Rejected, read_lerobot

TASK = "point_mass.easy"  # a registered task: N^P = 4, N^A = 2


def _episodes(rng: np.random.Generator, lengths: list[int]) -> list[dict[str, np.ndarray]]:
    return [{
        "state": rng.normal(size=(n, 4)).astype(np.float32),
        "action": rng.uniform(-1, 1, size=(n, 2)).astype(np.float32),
        "reward": rng.uniform(-1, 0, size=n).astype(np.float32),
        "terminated": rng.random(n) < 0.2,
    } for n in lengths]


def test_written_dataset_reads_back_exactly(tmp_path):
    fps = 1.0 / _control_timestep(TASK)
    eps = _episodes(np.random.default_rng(0), [5, 7, 3, 6])
    root = tmp_path / "arm"
    with LeRobotWriter(root, fps, 4, 2, robot_type="sim", terminated=True,
                       frames_per_file=10) as writer:
        for ep in eps:
            writer.add_episode(TASK, **ep)
    # files flush once 10 frames are buffered: episodes (0, 1) -> file 0, (2, 3) -> file 1
    files = sorted((root / "data").rglob("*.parquet"))
    assert [f.name for f in files] == ["file-000.parquet", "file-001.parquet"]
    assert [pq.read_metadata(f).num_rows for f in files] == [12, 9]
    index = pq.read_table(root / "meta/episodes/chunk-000/file-000.parquet").to_pandas()
    assert index["data/file_index"].tolist() == [0, 0, 1, 1]
    assert index["dataset_from_index"].tolist() == [0, 5, 12, 15]
    assert index["dataset_to_index"].tolist() == [5, 12, 15, 21]
    info = json.loads((root / "meta/info.json").read_text())
    assert (info["total_episodes"], info["total_frames"], info["total_tasks"]) == (4, 21, 1)
    assert info["features"]["observation.state"]["shape"] == [4]
    assert not (tmp_path / ".arm.partial").exists()

    results = read_lerobot(root)
    assert [label for label, _ in results] == [f"arm#episode_{i}" for i in range(4)]
    for (_, parsed), ep in zip(results, eps):
        assert not isinstance(parsed, Rejected), parsed
        episode, meta = parsed
        assert episode.task == TASK and meta["robot_type"] == "sim"
        np.testing.assert_array_equal(episode.proprio, ep["state"])
        np.testing.assert_array_equal(episode.actions, ep["action"])
        np.testing.assert_array_equal(episode.rewards, ep["reward"])
        # a terminated frame is a terminal state (d_t = 0), every other frame d_t = 1
        np.testing.assert_array_equal(episode.discounts, np.where(ep["terminated"], 0.0, 1.0))


def test_without_terminated_the_end_is_a_time_limit(tmp_path):
    ep = _episodes(np.random.default_rng(1), [6])[0]
    with LeRobotWriter(tmp_path / "d", 1.0 / _control_timestep(TASK), 4, 2) as writer:
        writer.add_episode(TASK, ep["state"], ep["action"], ep["reward"])
    ((_, (episode, _)),) = read_lerobot(tmp_path / "d")
    np.testing.assert_array_equal(episode.discounts, np.ones(6))  # next.done alone: truncation


def test_a_failure_leaves_no_dataset(tmp_path):
    ep = _episodes(np.random.default_rng(2), [4])[0]
    with pytest.raises(RuntimeError, match="robot stopped"):
        with LeRobotWriter(tmp_path / "d", 10.0, 4, 2, frames_per_file=1) as writer:
            writer.add_episode(TASK, ep["state"], ep["action"], ep["reward"])
            raise RuntimeError("robot stopped")
    assert list(tmp_path.iterdir()) == []


def test_bad_episodes_are_refused_naming_the_field(tmp_path):
    ep = _episodes(np.random.default_rng(3), [4])[0]
    writer = LeRobotWriter(tmp_path / "d", 10.0, 4, 2, terminated=True)
    with pytest.raises(ValueError, match=r"state has shape \(4, 3\)"):
        writer.add_episode(TASK, ep["state"][:, :3], ep["action"], ep["reward"], ep["terminated"])
    with pytest.raises(ValueError, match="next.terminated is declared"):
        writer.add_episode(TASK, ep["state"], ep["action"], ep["reward"])
    bad = ep["action"].copy()
    bad[1, 0] = np.nan
    with pytest.raises(ValueError, match="action holds NaN"):
        writer.add_episode(TASK, ep["state"], bad, ep["reward"], ep["terminated"])
    writer.abort()
    with pytest.raises(FileExistsError):
        LeRobotWriter(tmp_path, 10.0, 4, 2)
