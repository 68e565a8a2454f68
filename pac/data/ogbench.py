"""OGBench manipulation data by the benchmark's own recipe, from the oracles its package ships.

OGBench (Park et al., ICLR 2025) made its cube datasets with a script of its repository (not of
its wheel); this module follows that recipe through the package's API:

* ``play``: the plan oracle (``CubePlanOracle``, a keyframe plan with temporally smoothed noise:
  noise 0.1 of the action range, Gaussian smoothing sigma 0.5 steps). Every time the oracle
  finishes a plan the environment draws a new random target (``set_new_target``), and episodes
  run to their full length (``terminate_at_goal=False``): they never stop on success.
* ``noisy``: the closed-loop markov oracle (``CubeMarkovOracle``, ``min_norm`` 0.4) with a noise
  level xi ~ U(0, 0.1) drawn per episode (Gaussian action noise of std xi x (1, 1, 1, 3, 10) per
  action dimension) and a uniformly random action with probability 0.1 at every step.

Episodes are 1001 frames (the script's ``max_episode_steps``), i.e. 1000 transitions with a
successor; 1000 episodes make the published 1M-transition datasets (its extra 10 % of validation
episodes are not made here). The single-task rewards are relabelled as the package defines them
(``ogbench.relabel_utils``) for each of the env's 5 evaluation tasks: with c_i the position of
cube i in frame t's state and g_i that task's goal, success_i = ||c_i - g_i|| <= 0.04,
r_t = sum_i success_i - n_cubes, and the frame is terminal (mask 0) when every cube is at its goal.
The reward thus rates the state *before* the action, the benchmark's 'pre' success timing.

Each task gets its own LeRobotDataset v3.0 folder (``pac.data.lerobot_writer``) whose instruction
is the pipeline's task name (``cube_single.task1`` ...): the same frames, that task's rewards.
The oracles draw from numpy's global random state; it is seeded per episode and restored after.

ogbench is pinned in requirements.lock; ``bash benchmarks/ogbench_env.sh`` installs the same
versions beside an older environment into benchmarks/.ogbench
(``PYTHONPATH=benchmarks/.ogbench:$PWD``).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pac.data.lerobot_writer import LeRobotWriter

KINDS = ("play", "noisy")
#: the env families whose data this recipe makes, and the range of the per-episode stacking
#: probability (``p_stack`` of ``set_new_target``) the benchmark's script draws from for each
ENVS: dict[str, tuple[float, float]] = {"cube-single": (0.0, 0.0), "cube-double": (0.0, 0.25)}
NUM_TASKS = 5  # evaluation tasks per env (task1 ... task5)
EPISODE_FRAMES = 1001  # frames per episode: 1000 transitions with a next state
EPISODES = 1000  # 1000 x 1000 = the published 1M transitions
PLAY_NOISE = 0.1  # plan oracle: noise, as a fraction of each action dimension's range
PLAY_NOISE_SMOOTHING = 0.5  # ... smoothed over time by a Gaussian of this sigma (steps)
NOISY_MAX_NOISE = 0.1  # markov oracle: xi ~ U(0, this) per episode
NOISY_NOISE_SCALE = np.array([1.0, 1.0, 1.0, 3.0, 10.0])  # std = xi x this, per action dim
NOISY_MIN_NORM = 0.4  # markov oracle's minimum norm of its position correction
NOISY_P_RANDOM = 0.1  # probability of a uniformly random action
SUCCESS_RADIUS = 0.04  # a cube is at its goal within this distance (m)
INSTALL_HINT = ("ogbench is not installed: run `bash benchmarks/ogbench_env.sh` and put"
                " benchmarks/.ogbench on PYTHONPATH (PYTHONPATH=benchmarks/.ogbench:$PWD)")
_TASK_NAME = re.compile(r"^(cube_[a-z]+)\.task([1-9][0-9]*)$")


class OGBenchMissing(ImportError):
    """ogbench (or gymnasium) cannot be imported."""


def require_ogbench() -> Any:
    """Import gymnasium and register OGBench's manipulation envs; the gymnasium module."""
    try:
        import gymnasium
        import ogbench.manipspace  # noqa: F401  (registers the cube-* envs with gymnasium)
    except ImportError as exc:
        raise OGBenchMissing(f"{INSTALL_HINT} ({exc})") from exc
    return gymnasium


def ogbench_missing() -> str:
    """Why ogbench cannot be used here ("" when it can): a test's skip reason."""
    try:
        require_ogbench()
    except OGBenchMissing as exc:
        return str(exc)
    return ""


@dataclass(frozen=True)
class OGBenchTask:
    """One evaluation task of an OGBench env: ``cube_single.task1`` <-> cube-single task 1."""

    env: str  # the env family, e.g. "cube-single"
    task_id: int  # 1 ... NUM_TASKS

    @property
    def name(self) -> str:
        """The pipeline's task name, also the dataset's instruction text."""
        return f"{self.env.replace('-', '_')}.task{self.task_id}"

    @property
    def env_id(self) -> str:
        """The benchmark's single-task evaluation env (reward, success and episode length)."""
        return f"{self.env}-singletask-task{self.task_id}-v0"


def ogbench_task(name: str) -> OGBenchTask:
    """Parse a task name (``cube_single.task3``), or ValueError naming the known ones."""
    match = _TASK_NAME.match(name) if isinstance(name, str) else None
    env = match and match.group(1).replace("_", "-")
    if not match or env not in ENVS or not 1 <= int(match.group(2)) <= NUM_TASKS:
        known = ", ".join(f"{e.replace('-', '_')}.task1..{NUM_TASKS}" for e in ENVS)
        raise ValueError(f"task {name!r} is not an OGBench task ({known})")
    return OGBenchTask(env, int(match.group(2)))


def env_tasks(env: str) -> list[OGBenchTask]:
    """The 5 evaluation tasks of an env family."""
    if env not in ENVS:
        raise ValueError(f"env {env!r} is not one of {', '.join(ENVS)}")
    return [OGBenchTask(env, k) for k in range(1, NUM_TASKS + 1)]


def task_goals(env: str) -> np.ndarray:
    """[NUM_TASKS, n_cubes, 3] goal positions of the env's evaluation tasks, from the package."""
    gymnasium = require_ogbench()
    # 'task' mode holds the evaluation tasks; without the env checker nothing is simulated yet
    task_env = gymnasium.make(f"{env}-v0", disable_env_checker=True)
    try:
        infos = task_env.unwrapped.task_infos
        return np.stack([np.asarray(info["goal_xyzs"], np.float64) for info in infos])
    finally:
        task_env.close()


def relabel(cubes: np.ndarray, goal: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The benchmark's single-task reward: cubes [T, n, 3], goal [n, 3] -> (r [T], success [T]).

    r_t = (number of cubes within SUCCESS_RADIUS of their goal) - n; success_t: all of them are.
    """
    at_goal = np.linalg.norm(np.asarray(cubes, np.float64) - goal, axis=-1) <= SUCCESS_RADIUS
    return (at_goal.sum(-1) - at_goal.shape[-1]).astype(np.float32), at_goal.all(-1)


def cube_positions(info: dict[str, Any]) -> np.ndarray:
    """[n_cubes, 3] cube positions of the state an env info describes (``block_<i>_pos``)."""
    cubes = []
    while f"privileged/block_{len(cubes)}_pos" in info:
        cubes.append(np.asarray(info[f"privileged/block_{len(cubes)}_pos"], np.float64))
    return np.stack(cubes)


@contextmanager
def global_numpy_seed(seed: int) -> Iterator[None]:
    """Seed numpy's global random state (the oracles draw from it), restoring it afterwards."""
    saved = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(saved)


def make_oracle(env: Any, kind: str) -> Any:
    """The benchmark's oracle for a data kind: plan (play) or markov (noisy)."""
    require_ogbench()
    if kind == "play":
        from ogbench.manipspace.oracles.plan.cube_plan import CubePlanOracle

        return CubePlanOracle(env=env, noise=PLAY_NOISE, noise_smoothing=PLAY_NOISE_SMOOTHING)
    if kind == "noisy":
        from ogbench.manipspace.oracles.markov.cube_markov import CubeMarkovOracle

        return CubeMarkovOracle(env=env, min_norm=NOISY_MIN_NORM)
    raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")


def make_data_env(env: str, frames: int) -> Any:
    """The env in data-collection mode: random scenes and targets, no stop on success."""
    if env not in ENVS:
        raise ValueError(f"env {env!r} is not one of {', '.join(ENVS)}")
    gymnasium = require_ogbench()
    return gymnasium.make(f"{env}-v0", terminate_at_goal=False, mode="data_collection",
                          max_episode_steps=frames)


@dataclass
class Rollout:
    """One collected episode: states, actions and cube positions per frame."""

    state: np.ndarray  # [T, S] float32
    action: np.ndarray  # [T, A] float32, in [-1, 1]
    cubes: np.ndarray  # [T, n_cubes, 3] float64
    targets: int  # targets the oracle finished (a new one was drawn after each)
    at_target: int  # frames whose state has the current target's cube at its target


def episode_seed(seed: int, episode: int) -> int:
    """A 31-bit seed fixed by (generator seed, episode index) alone."""
    return int(np.random.SeedSequence([seed, episode]).generate_state(1)[0] & 0x7FFFFFFF)


def collect_episode(env: Any, oracle: Any, kind: str, env_name: str, seed: int) -> Rollout:
    """Roll one episode of the recipe until the env's time limit; deterministic given `seed`."""
    rng = np.random.default_rng(seed)
    states, actions, cubes = [], [], []
    targets = at_target = 0
    with global_numpy_seed(seed):
        ob, info = env.reset(seed=seed)
        p_stack = rng.uniform(*ENVS[env_name])
        xi = rng.uniform(0.0, NOISY_MAX_NOISE) if kind == "noisy" else 0.0
        oracle.reset(ob, info)
        done = False
        while not done:
            cubes.append(cube_positions(info))
            if kind == "noisy" and rng.random() < NOISY_P_RANDOM:
                action = rng.uniform(-1.0, 1.0, 5)
            else:
                action = np.asarray(oracle.select_action(ob, info), np.float64)
                if kind == "noisy":
                    action = action + rng.normal(0.0, xi * NOISY_NOISE_SCALE)
            action = np.clip(action, -1.0, 1.0)
            next_ob, _, terminated, truncated, info = env.step(action)
            done = terminated or truncated
            at_target += bool(info["success"])
            if oracle.done:  # the oracle finished its target: draw a new one
                targets += 1
                oracle_ob, oracle_info = env.unwrapped.set_new_target(p_stack=p_stack)
                oracle.reset(oracle_ob, oracle_info)
            states.append(ob)
            actions.append(action)
            ob = next_ob
    return Rollout(np.asarray(states, np.float32), np.asarray(actions, np.float32),
                   np.stack(cubes), targets, at_target)


@dataclass
class GenerateReport:
    """What one generation made and how fast."""

    out: Path
    kind: str
    env: str
    episodes: int
    frames: int  # in all (per task dataset)
    datasets: dict[str, Path]  # task name -> LeRobot folder
    collect_s: float  # simulation and oracles, wall clock
    collect_cpu_s: float  # ... this process's CPU time (steadier on a shared machine)
    total_s: float  # everything: env builds, relabelling and writing too
    targets: int  # targets finished over all episodes
    success_frames: dict[str, int] = field(default_factory=dict)  # per task: terminal frames

    @property
    def env_steps_per_s(self) -> float:
        """Frames collected per second of wall clock."""
        return self.frames / self.collect_s if self.collect_s > 0 else float("nan")

    @property
    def env_steps_per_cpu_s(self) -> float:
        """Frames collected per second of this process's CPU time: the rate of one free core."""
        return self.frames / self.collect_cpu_s if self.collect_cpu_s > 0 else float("nan")


def generate(
    out: str | Path,
    kind: str = "play",
    episodes: int = EPISODES,
    frames: int = EPISODE_FRAMES,
    seed: int = 0,
    env: str = "cube-single",
    tasks: list[int] | None = None,
    progress: Callable[[int, Rollout], None] | None = None,
) -> GenerateReport:
    """Make one LeRobot dataset per evaluation task under `out` (``<env>-<kind>-task<k>``)."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if env not in ENVS:
        raise ValueError(f"env must be one of {', '.join(ENVS)}, got {env!r}")
    if not isinstance(episodes, int) or episodes < 1:
        raise ValueError(f"episodes must be a positive integer, got {episodes!r}")
    if not isinstance(frames, int) or frames < 2:
        raise ValueError(f"frames must be an integer >= 2 (a transition needs a next state),"
                         f" got {frames!r}")
    chosen = env_tasks(env) if tasks is None else [OGBenchTask(env, k) for k in tasks]
    if not chosen or len({t.task_id for t in chosen}) != len(chosen):
        raise ValueError(f"tasks must name distinct evaluation tasks, got {tasks!r}")
    for task in chosen:
        if not 1 <= task.task_id <= NUM_TASKS:
            raise ValueError(f"tasks must lie in 1..{NUM_TASKS}, got {task.task_id}")
    out = Path(out)
    folders = {t.name: out / f"{env}-{kind}-task{t.task_id}" for t in chosen}
    taken = [str(p) for p in folders.values() if p.exists()]
    if taken:
        raise FileExistsError(f"already exist: {', '.join(taken)}")
    start = time.perf_counter()
    goals = task_goals(env)
    data_env = make_data_env(env, frames)
    oracle = make_oracle(data_env, kind)
    state_size = int(data_env.observation_space.shape[0])
    action_size = int(data_env.action_space.shape[0])
    fps = 1.0 / data_env.unwrapped.control_timestep()
    out.mkdir(parents=True, exist_ok=True)
    writers = {name: LeRobotWriter(path, fps, state_size, action_size, robot_type="ur5e",
                                   terminated=True) for name, path in folders.items()}
    collect_s = collect_cpu_s = 0.0
    targets = 0
    success = dict.fromkeys(folders, 0)
    try:
        for ep in range(episodes):
            t0, c0 = time.perf_counter(), time.process_time()
            rollout = collect_episode(data_env, oracle, kind, env, episode_seed(seed, ep))
            collect_s += time.perf_counter() - t0
            collect_cpu_s += time.process_time() - c0
            if len(rollout.state) != frames:
                raise RuntimeError(f"episode {ep} has {len(rollout.state)} frames, not {frames}")
            targets += rollout.targets
            for task in chosen:
                rewards, done = relabel(rollout.cubes, goals[task.task_id - 1])
                success[task.name] += int(done.sum())
                writers[task.name].add_episode(task.name, rollout.state, rollout.action,
                                               rewards, terminated=done)
            if progress is not None:
                progress(ep, rollout)
        for writer in writers.values():
            writer.close()
    except BaseException:
        for writer in writers.values():
            writer.abort()
        raise
    finally:
        data_env.close()
    return GenerateReport(out, kind, env, episodes, episodes * frames, folders, collect_s,
                          collect_cpu_s, time.perf_counter() - start, targets, success)


class MarkovOraclePolicy:
    """The benchmark's markov oracle acting in a single-task evaluation env (a reference policy).

    In 'task' mode the env's info lacks the data-collection target fields the oracle reads, so
    they are filled from the task's goal (privileged, as the oracle is): the first cube not yet at
    its goal is the target block, the goal's yaw is 0 (the env sets identity goal orientations).
    This suffices for pick-and-place tasks (all of cube-single's); it is not a stacking planner.
    """

    def __init__(self, env: Any, seed: int = 0):
        require_ogbench()
        from ogbench.manipspace.oracles.markov.cube_markov import CubeMarkovOracle

        self.env = env
        self.oracle = CubeMarkovOracle(env=env, min_norm=NOISY_MIN_NORM)
        self._rng = np.random.default_rng(seed)
        self._block = -1

    def _with_target(self, info: dict[str, Any]) -> dict[str, Any]:
        goals = np.asarray(self.env.unwrapped.cur_task_info["goal_xyzs"], np.float64)
        cubes = cube_positions(info)
        away = np.linalg.norm(cubes - goals, axis=-1) > SUCCESS_RADIUS
        block = int(np.argmax(away)) if away.any() else len(cubes) - 1
        return {**info, "privileged/target_block": block,
                "privileged/target_block_pos": goals[block],
                "privileged/target_block_yaw": np.zeros(1)}

    def reset(self, observation: np.ndarray, info: dict[str, Any]) -> None:
        with global_numpy_seed(int(self._rng.integers(2**31 - 1))):  # the oracle's draws
            self.oracle.reset(observation, self._with_target(info))

    def act(self, observation: np.ndarray, info: dict[str, Any]) -> np.ndarray:
        full = self._with_target(info)
        if full["privileged/target_block"] != self._block:  # a new block: restart the oracle
            self._block = full["privileged/target_block"]
            self.reset(observation, info)
        return np.asarray(self.oracle.select_action(observation, full), np.float64)
