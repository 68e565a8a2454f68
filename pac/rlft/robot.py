"""The robot seam of RLFT (§4.3): what a robot implements, its dm_control stand-in, and the
collection of one round's rollouts into a landing folder.

The "robot" is a :class:`RobotClient`. :class:`SimRobot` stands in for one with dm_control; a
real robot implements the same one method and plugs in unchanged. Either way the policy side is
:class:`pac.evaluation.rollout.PolicyServer` (the model loaded once, batch 1), the code a robot
would call.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from pac.data.store import Episode
from pac.rlft.ingest import write_rollout

#: the robot's call into the policy: (proprio [N^P_task], camera images or None) -> action
ActFn = Callable[[np.ndarray, np.ndarray | None], np.ndarray]
ROLLOUT_SEED_BASE = 50_000  # rollout episodes never share seeds with evaluation episodes


class RobotClient(Protocol):
    """What the rollout loop needs from a robot.

    ``run_episode`` resets the robot to a start state, then at its control rate reads the
    proprioception (and cameras), calls ``act`` and applies the action, until the episode ends;
    it returns the T recorded steps (o_t, a_t, r_t, d_t). A robot without a reward signal
    returns its success label instead (see docs/rollout_format.md: rewards are computable).
    """

    name: str

    def run_episode(self, task: str, act: ActFn, seed: int) -> Episode: ...


def sim_robot(cfg: Any, checkpoint: str | Path, tasks: list[str], **kwargs: Any) -> SimRobot:
    """The SimRobot that collects `tasks` with `checkpoint` over the evaluation's horizons
    (:func:`pac.evaluation.evaluator.eval_horizons`: eval.max_steps, else the checkpoint's
    training data, else data.episode_steps), with ``cfg.data.cameras`` cameras the model reads."""
    from pac.checkpoint import load_checkpoint_horizons
    from pac.evaluation.evaluator import eval_horizons

    chosen = eval_horizons(cfg, list(tasks), load_checkpoint_horizons(checkpoint))
    return SimRobot(cfg.eval.max_steps or cfg.data.episode_steps,
                    cameras=min(cfg.model.num_images, cfg.data.cameras),
                    horizons={t: n for t, (n, _) in chosen.items()}, **kwargs)


@dataclass
class SimRobot:
    """The dm_control stand-in for a robot (the one hardware substitute of the pipeline).

    Episodes of a task run over ``horizons[task]`` control steps when given (the evaluation's
    horizon, :func:`sim_robot`), else over `episode_steps`.
    """

    episode_steps: int
    cameras: int = 0  # 80x80 camera images per step handed to the policy (and recorded)
    realtime: bool = False  # hold the control rate: sleep out each control period
    name: str = "dm_control"
    horizons: dict[str, int] = field(default_factory=dict)

    def run_episode(self, task: str, act: ActFn, seed: int) -> Episode:
        from pac.envs import flatten_observation, render
        from pac.evaluation.evaluator import episode_env
        from pac.evaluation.rollout import run_episode

        steps = self.horizons.get(task, self.episode_steps)
        env = episode_env(task, seed, steps)
        period = float(env.control_timestep())
        images: list[np.ndarray] = []
        tick = time.perf_counter()

        def policy(env, time_step) -> np.ndarray:
            nonlocal tick
            frames = None
            if self.cameras:
                frames = np.stack([render(env, 80, c) for c in range(self.cameras)])
                images.append(frames)
            action = act(flatten_observation(time_step.observation), frames)
            if self.realtime:
                tick += period
                time.sleep(max(0.0, tick - time.perf_counter()))
            return action

        ep = run_episode(env, policy, task, steps)
        return Episode(
            task=task,
            proprio=ep.observations[:-1],  # o_0 .. o_{T-1}: the states the actions were taken in
            actions=ep.actions,
            rewards=ep.rewards,
            discounts=ep.discounts,
            success=ep.success,
            source="rollout",
            images=np.stack(images) if images else None,
        )


@dataclass
class CollectReport:
    files: list[Path]
    successes: dict[str, int]  # per task
    episodes: dict[str, int]
    policy_hz: float  # policy steps per second at batch 1
    seconds: float

    @property
    def success_rate(self) -> float:
        n = sum(self.episodes.values())
        return sum(self.successes.values()) / n if n else math.nan


def rollout_seed(round_k: int, task: str, index: int, base: int = 0) -> int:
    from pac.evaluation.evaluator import episode_seed

    return episode_seed(ROLLOUT_SEED_BASE + base + 1_000 * round_k, task, index)


def collect(
    server: Any,
    robot: RobotClient,
    tasks: list[str],
    episodes_per_task: int,
    landing: str | Path,
    round_k: int = 0,
    seed: int = 0,
) -> CollectReport:
    """Run `episodes_per_task` episodes per task with `server` (a PolicyServer) on `robot` and
    write one rollout file per episode into `landing`, as a robot delivers them."""
    import torch

    from pac.envs import is_success

    landing = Path(landing)
    landing.mkdir(parents=True, exist_ok=True)
    files, successes, counts = [], dict.fromkeys(tasks, 0), dict.fromkeys(tasks, 0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # batch 1: one thread is fastest and leaves the other core free
    start, first_latency = time.perf_counter(), len(server.latencies)
    try:
        for task in tasks:
            for i in range(episodes_per_task):
                s = rollout_seed(round_k, task, i, seed)
                ep = robot.run_episode(task, lambda p, im, t=task: server.act(p, t, im), s)
                ep.success = is_success(task, ep.rewards)  # the one success definition
                meta = {"robot": robot.name, "round": round_k, "seed": s, "episode": i,
                        "decode": server.decode, "recorded": time.strftime("%Y-%m-%dT%H:%M:%S")}
                name = f"r{round_k:02d}-{task}-{i:04d}-{s}.npz"
                files.append(write_rollout(landing / name, ep, meta))
                successes[task] += bool(ep.success)
                counts[task] += 1
    finally:
        torch.set_num_threads(threads)
    latencies = server.latencies[first_latency:]
    hz = len(latencies) / float(np.sum(latencies)) if latencies else math.nan
    return CollectReport(files, successes, counts, hz, time.perf_counter() - start)
