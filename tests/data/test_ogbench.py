"""pac.data.ogbench: OGBench cube data by the benchmark's recipe, relabelled as the package does.

The simulation tests need ogbench (pinned in requirements.lock; or ``bash
benchmarks/ogbench_env.sh`` and ``PYTHONPATH=benchmarks/.ogbench:$PWD``); without it they are
skipped with that reason.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from pac.config import load_config
from pac.data.ogbench import (
    INSTALL_HINT,
    OGBenchMissing,
    collect_episode,
    env_tasks,
    generate,
    make_data_env,
    make_oracle,
    ogbench_missing,
    ogbench_task,
    relabel,
    require_ogbench,
    task_goals,
)
from pac.rlft.ingest import Rejected, read_lerobot
from pac.tasks import TASKS

MISSING = ogbench_missing()
needs_ogbench = pytest.mark.skipif(bool(MISSING), reason=MISSING or "ogbench importable")

PRESET = Path(__file__).parents[2] / "params" / "presets" / "ogbench_cube.yaml"
XYZ_CENTER, XYZ_SCALE = np.array([0.425, 0.0, 0.0]), 10.0  # the env's state scaling of positions


def test_task_names_map_to_the_benchmarks_envs():
    assert [t.name for t in env_tasks("cube-single")] == [
        f"cube_single.task{k}" for k in range(1, 6)]
    assert ogbench_task("cube_single.task3").env_id == "cube-single-singletask-task3-v0"
    for bad in ("cube_single.task6", "cube_single.task0", "cube_triple.task1", "reacher.easy"):
        with pytest.raises(ValueError, match="is not an OGBench task"):
            ogbench_task(bad)


def test_missing_ogbench_is_one_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "ogbench", None)  # import ogbench -> ImportError
    monkeypatch.setitem(sys.modules, "ogbench.manipspace", None)
    with pytest.raises(OGBenchMissing, match="benchmarks/ogbench_env.sh") as info:
        generate("/nonexistent/out", episodes=1)
    assert str(info.value).startswith(INSTALL_HINT)


@needs_ogbench
def test_relabel_is_the_benchmarks_single_task_reward():
    """Against the package's own relabelling (ogbench.relabel_utils) on hand-placed cubes."""
    from ogbench.relabel_utils import relabel_dataset

    gymnasium = require_ogbench()
    env = gymnasium.make("cube-single-singletask-task4-v0", disable_env_checker=True)
    goal = task_goals("cube-single")[3]  # task4
    offsets = np.array([0.0, 0.02, 0.0395, 0.0405, 0.06, 0.3])
    directions = np.array([[1, 0, 0], [0, 1, 0], [0.6, 0, 0.8], [-0.6, 0.8, 0]])
    cubes = (goal[0] + offsets[:, None, None] * directions[None]).reshape(-1, 1, 3)
    qpos = np.zeros((len(cubes), 21))
    qpos[:, 14:17] = cubes[:, 0]
    dataset = {"qpos": qpos}
    relabel_dataset("cube-single-singletask-task4-v0", env, dataset)
    env.close()

    rewards, success = relabel(cubes, goal)
    np.testing.assert_array_equal(rewards, dataset["rewards"])
    np.testing.assert_array_equal(1.0 - success, dataset["masks"])
    assert success.sum() == 3 * 4  # offsets 0, 0.02, 0.0395 in every direction


@needs_ogbench
def test_play_episodes_run_their_full_length_through_new_targets():
    env = make_data_env("cube-single", 221)
    oracle = make_oracle(env, "play")
    first = collect_episode(env, oracle, "play", "cube-single", seed=5)
    again = collect_episode(env, oracle, "play", "cube-single", seed=5)
    other = collect_episode(env, oracle, "play", "cube-single", seed=6)
    noisy = collect_episode(env, make_oracle(env, "noisy"), "noisy", "cube-single", seed=5)
    env.close()
    assert first.state.shape == (221, 28) and first.action.shape == (221, 5)
    assert first.targets >= 2  # a plan takes ~100 steps: targets keep coming, no early stop
    np.testing.assert_array_equal(first.state, again.state)  # deterministic given the seed
    np.testing.assert_array_equal(first.action, again.action)
    assert not np.array_equal(first.action, other.action)
    assert noisy.state.shape == (221, 28) and np.abs(noisy.action).max() <= 1.0
    # cube positions recorded from the env's info are the ones in the state
    for r in (first, noisy):
        np.testing.assert_allclose(r.state[:, 19:22] / XYZ_SCALE + XYZ_CENTER, r.cubes[:, 0],
                                   atol=1e-6)


@needs_ogbench
def test_generated_datasets_ingest_with_the_benchmarks_rewards(tmp_path):
    """generate -> LeRobot folders -> pac ingest's reader, the tasks declared by
    params/presets/ogbench_cube.yaml (simulator: {ogbench: cube-single-v0, task_id: k})."""
    from ogbench.relabel_utils import relabel_dataset

    saved = TASKS.declared
    load_config(PRESET)
    try:
        report = generate(tmp_path, "play", episodes=2, frames=120, seed=3, tasks=[1, 3])
        assert sorted(report.datasets) == ["cube_single.task1", "cube_single.task3"]
        env = require_ogbench().make("cube-single-singletask-task1-v0", disable_env_checker=True)
        for name, folder in report.datasets.items():
            info = json.loads((folder / "meta" / "info.json").read_text())
            assert (info["fps"], info["total_episodes"], info["total_frames"]) == (20.0, 2, 240)
            results = read_lerobot(folder)
            assert len(results) == 2
            env_id = ogbench_task(name).env_id
            for _, parsed in results:
                assert not isinstance(parsed, Rejected), parsed
                episode, _ = parsed
                assert episode.task == name and len(episode.rewards) == 120
                assert episode.proprio.shape == (120, 28) and episode.actions.shape == (120, 5)
                # the package's relabelling of the cube positions read back from the state
                qpos = np.zeros((120, 21))
                qpos[:, 14:17] = episode.proprio[:, 19:22] / XYZ_SCALE + XYZ_CENTER
                expected = {"qpos": qpos}
                relabel_dataset(env_id, env, expected)
                np.testing.assert_array_equal(episode.rewards, expected["rewards"])
                np.testing.assert_array_equal(episode.discounts, expected["masks"])
        env.close()
    finally:
        TASKS.declare(saved)
