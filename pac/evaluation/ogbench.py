"""Success on OGBench's single-task envs: the benchmark's tasks, episode lengths and success.

An episode runs in the benchmark's own evaluation env (``cube-single-singletask-task<k>-v0``:
the task's fixed start and goal, its registered time limit, 200 steps for cube-single) until the
env ends it. It succeeds as in the benchmark's evaluation: the ``success`` flag of the last step,
true exactly when the episode ended at the goal (the env terminates there). Each task's row is a
success rate with its Wilson interval (pac.evaluation.stats); the pooled row over the tasks is
the benchmark's "5-task average" when every task has the same number of episodes. The return is
the sum of the env's single-task rewards (0 at the goal, -1 a cube away from it otherwise).

A policy is any object with ``reset(observation, info)`` and ``act(observation, info) ->
action`` (5 values in [-1, 1], clipped); ``make_policy(env)`` builds one per task env. Episode
seeds come from ``pac.evaluation.evaluator.episode_seed`` (base seed, task, episode index).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from pac.data.ogbench import ogbench_task, require_ogbench
from pac.evaluation.stats import Summary, summarise


class OGBenchPolicy(Protocol):
    def reset(self, observation: np.ndarray, info: dict[str, Any]) -> None: ...

    def act(self, observation: np.ndarray, info: dict[str, Any]) -> np.ndarray: ...


@dataclass(frozen=True)
class EpisodeResult:
    task: str
    seed: int
    success: bool
    steps: int
    episode_return: float


@dataclass
class OGBenchEvaluation:
    tasks: list[Summary]  # one row per task
    pooled: Summary  # all the tasks' episodes together
    episodes: list[EpisodeResult]
    episode_steps: dict[str, int]  # each task env's time limit


def make_task_env(task: str) -> Any:
    """The benchmark's single-task evaluation env of a task name (``cube_single.task1``)."""
    return require_ogbench().make(ogbench_task(task).env_id)


def run_ogbench_episode(env: Any, policy: OGBenchPolicy, task: str, seed: int) -> EpisodeResult:
    """One episode until the env terminates (goal) or truncates (time limit)."""
    observation, info = env.reset(seed=seed)
    policy.reset(observation, info)
    width = env.action_space.shape
    done, steps, total = False, 0, 0.0
    while not done:
        action = np.asarray(policy.act(observation, info), np.float64)
        if action.shape != width or not np.isfinite(action).all():
            raise ValueError(f"{task}: the policy's action must be {width[0]} finite values,"
                             f" got shape {action.shape}")
        observation, reward, terminated, truncated, info = env.step(np.clip(action, -1.0, 1.0))
        done = terminated or truncated
        steps += 1
        total += float(reward)
    return EpisodeResult(task, seed, bool(info["success"]), steps, total)


def evaluate_ogbench(
    make_policy: Callable[[Any], OGBenchPolicy],
    tasks: Sequence[str],
    episodes: int,
    seed: int = 0,
    name: str = "all",
) -> OGBenchEvaluation:
    """`episodes` episodes of each task; per-task and pooled success with Wilson intervals."""
    from pac.evaluation.evaluator import episode_seed

    if not tasks:
        raise ValueError("tasks must name at least one OGBench task")
    if not isinstance(episodes, int) or episodes < 1:
        raise ValueError(f"episodes must be a positive integer, got {episodes!r}")
    for task in tasks:
        ogbench_task(task)  # every name is checked before any simulation
    results: list[EpisodeResult] = []
    rows: list[Summary] = []
    limits: dict[str, int] = {}
    for task in tasks:
        env = make_task_env(task)
        try:
            limits[task] = int(env.spec.max_episode_steps)
            policy = make_policy(env)
            done = [run_ogbench_episode(env, policy, task, episode_seed(seed, task, e))
                    for e in range(episodes)]
        finally:
            env.close()
        results += done
        rows.append(summarise(task, [r.episode_return for r in done], None,
                              [r.success for r in done]))
    pooled = summarise(name, [r.episode_return for r in results], None,
                       [r.success for r in results], num_tasks=len(tasks))
    return OGBenchEvaluation(rows, pooled, results, limits)
