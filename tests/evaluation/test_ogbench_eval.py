"""OGBench tasks through `pac eval`'s harness: declared in params, rolled out in the benchmark's
single-task envs behind the simulator seam (pac.envs.make_env -> pac.evaluation.ogbench).

The simulation tests need ogbench (pinned in requirements.lock; or ``bash
benchmarks/ogbench_env.sh`` and ``PYTHONPATH=benchmarks/.ogbench:$PWD``); without it they are
skipped with that reason. One env is built per module (MuJoCo compiles the arm in ~5 s).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from pac.config import ConfigError, load_config
from pac.data.ogbench import ogbench_missing
from pac.evaluation import evaluator
from pac.evaluation.evaluator import evaluate
from pac.evaluation.stats import wilson_interval
from pac.tasks import TASKS

PRESET = Path(__file__).parents[2] / "params" / "presets" / "ogbench_cube.yaml"
TASK = "cube_single.task1"

MISSING = ogbench_missing()
needs_ogbench = pytest.mark.skipif(bool(MISSING), reason=MISSING or "ogbench importable")


@pytest.fixture(scope="module")
def cfg():
    """The preset's params (its tasks declared), the registry restored afterwards."""
    saved = TASKS.declared
    yield load_config(PRESET, ["eval.episodes_per_task=3", "eval.workers=1",
                               "eval.videos_per_task=0", "eval.seed=0"])
    TASKS.declare(saved)


def test_the_preset_declares_cube_singles_five_tasks(cfg):
    specs = [TASKS[f"cube_single.task{k}"] for k in range(1, 6)]
    assert [(s.simulator, s.domain, s.task) for s in specs] == [
        ("ogbench", "cube-single", f"task{k}") for k in range(1, 6)]
    for s in specs:  # the benchmark's sizes, 20 Hz control, 200-step evaluation episodes
        assert (s.num_proprio, s.num_actions, s.fps, s.episode_steps) == (28, 5, 20.0, 200)
        assert (s.success_reward, s.success_window) == (0.0, 0.0)  # reward 0 on the last step
    assert evaluator.eval_horizons(cfg, [TASK, "reacher.easy"], {TASK: 1001}) == {
        TASK: (200, "simulator"), "reacher.easy": (100, "data.episode_steps")}


@pytest.mark.parametrize("simulator, message", [
    ({"ogbench": "cube-triple-v0", "task_id": 1}, "'cube-triple-v0' is not a known OGBench env"),
    ({"ogbench": "cube-single-v0", "task_id": 6}, r"task_id=6 is outside the allowed range"),
    ({"ogbench": "cube-single-v0", "task_id": 1, "dm_control": "reacher.easy"},
     "give either dm_control"),
])
def test_bad_ogbench_declarations_name_the_field(simulator, message, tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"extends": str(PRESET),
                                      "tasks": {"cube_single.task1": {"simulator": simulator}}}))
    saved = TASKS.declared
    try:
        with pytest.raises(ConfigError, match=message):
            load_config(params)
    finally:
        TASKS.declare(saved)


@needs_ogbench
def test_the_seam_matches_the_benchmarks_env_and_success(cfg):
    """make_env's episodes are the gymnasium env's own: same seed, same states and rewards."""
    env = evaluator.episode_env(TASK, 4, 200)  # make_env's, cached for the module
    actions = np.random.default_rng(0).uniform(-1, 1, (5, 5))
    first = env.reset()
    seed = env._episode_seed
    for a in actions:
        step = env.step(a)
    # the benchmark's env driven by its own API from the same seed
    ob, _ = env.env.reset(seed=seed)
    np.testing.assert_array_equal(first.observation["state"], ob)
    for a in actions:
        ob, reward, terminated, truncated, info = env.env.step(a)
    np.testing.assert_array_equal(step.observation["state"], ob)
    assert step.reward == reward and step.mid() and not (terminated or truncated)
    assert not info["success"] and reward == -1.0  # away from the goal: -1, not a success
    # ... and the same seed gives the same episode again
    env.task.random.seed(4)
    assert env.reset() and env._episode_seed == seed


@needs_ogbench
def test_the_oracle_scores_100_percent_through_pac_eval(cfg, tmp_path):
    """`pac eval --policy expert`: the benchmark's markov oracle in the single-task env."""
    result = evaluate(cfg, policy="expert", tasks=[TASK], out_dir=tmp_path, track=False)
    row = next(r for r in result.rows if r["level"] == "task")
    assert (row["name"], row["episodes"], row["success_rate"]) == (TASK, 3, 100.0)
    low, high = wilson_interval(3, 3)
    assert (row["success_low"], row["success_high"]) == pytest.approx((100 * low, 100 * high))
    assert result.metrics["horizon"] == {TASK: 200}  # the benchmark's time limit
    episodes = (tmp_path / "episodes.csv").read_text().splitlines()[1:]
    assert len(episodes) == 3
    for line in episodes:
        _, _, _, ret, success, steps, _ = line.split(",")
        # the goal ends the episode early; the reward rates the state before each action:
        # -1 on every step but the last, whose state is at the goal
        assert success == "True" and int(steps) < 200
        assert float(ret) == -(int(steps) - 1)
