"""OGBench's single-task envs as a simulator of the pipeline, behind dm_control's interface.

A task declared with ``simulator: {ogbench: cube-single-v0, task_id: k}`` (pac.tasks) is rolled
out in the benchmark's own evaluation env ``cube-single-singletask-task<k>-v0``: the task's
fixed start and goal, its single-task reward, its time limit (200 steps for cube-single). This
class gives that gymnasium env the ``dm_env`` interface the harness drives
(:func:`pac.envs.make_env` builds it): ``reset()`` / ``step(a)`` return TimeSteps whose
observation is ``{"state": <28 values>}``; reaching the goal terminates (discount 0), the time
limit truncates (discount 1). The benchmark's success (the last step's ``success`` flag) is then
the pipeline's success rule read from the rewards (reward 0 on the final step, pac.tasks), and
the harness reports it with Wilson intervals like any task's.

Like a dm_control environment, episodes are drawn from ``task.random`` (a RandomState seeded at
construction; the evaluator re-seeds it per episode); ``expert_action()`` is the benchmark's
markov oracle (pac.data.ogbench.MarkovOraclePolicy), the task's scripted expert; ``physics``
offers ``time()`` and ``render()`` as dm_control's physics does.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import dm_env
import numpy as np

from pac.data.ogbench import MarkovOraclePolicy, require_ogbench
from pac.tasks import TaskSpec, ogbench_env_id

CAMERA = "front"  # the state-based envs' rendering camera


class OGBenchEnvironment:
    """One OGBench single-task env (`spec`, ``spec.simulator == "ogbench"``) as a dm_env."""

    def __init__(self, spec: TaskSpec, seed: int, episode_steps: int):
        gymnasium = require_ogbench()
        self.spec = spec
        self.env = gymnasium.make(ogbench_env_id(spec), max_episode_steps=int(episode_steps),
                                  disable_env_checker=True)
        self.task = SimpleNamespace(random=np.random.RandomState(int(seed)))
        self.physics = _Physics(self)
        self._observation: np.ndarray | None = None
        self._info: dict[str, Any] = {}
        self._episode_seed = 0
        self._oracle: MarkovOraclePolicy | None = None
        self._ended = True

    def reset(self) -> dm_env.TimeStep:
        self._episode_seed = int(self.task.random.randint(2**31 - 1))
        self._observation, self._info = self.env.reset(seed=self._episode_seed)
        self._oracle, self._ended = None, False
        return dm_env.restart({"state": self._observation})

    def step(self, action: np.ndarray) -> dm_env.TimeStep:
        if self._ended:
            return self.reset()
        observation, reward, terminated, truncated, info = self.env.step(
            np.asarray(action, np.float64))
        self._observation, self._info = observation, info
        obs = {"state": observation}
        if terminated:
            self._ended = True
            return dm_env.termination(float(reward), obs)
        if truncated:
            self._ended = True
            return dm_env.truncation(float(reward), obs)
        return dm_env.transition(float(reward), obs)

    def expert_action(self) -> np.ndarray:
        """The benchmark's markov oracle's action for the current state (new each episode)."""
        if self._observation is None:
            raise RuntimeError("reset() the environment before asking the oracle")
        if self._oracle is None:
            self._oracle = MarkovOraclePolicy(self.env, seed=self._episode_seed)
        return self._oracle.act(self._observation, self._info)

    def control_timestep(self) -> float:
        return float(self.env.unwrapped.control_timestep())

    def close(self) -> None:
        self.env.close()


class _Physics:
    """The parts of dm_control's physics the pipeline reads: simulated time and rendering."""

    def __init__(self, owner: OGBenchEnvironment):
        self._owner = owner
        self._renderers: dict[tuple[int, int], Any] = {}

    def time(self) -> float:
        return float(self._owner.env.unwrapped._data.time)

    def render(self, height: int = 80, width: int = 80, camera_id: int | str = 0) -> np.ndarray:
        """An RGB frame uint8 [height, width, 3] of the front camera (any camera id)."""
        import mujoco

        env = self._owner.env.unwrapped
        key = (int(height), int(width))
        if key not in self._renderers:
            self._renderers[key] = mujoco.Renderer(env._model, *key)
        renderer = self._renderers[key]
        renderer.update_scene(env._data, camera=CAMERA)
        return renderer.render()
