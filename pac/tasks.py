"""The task registry: every task the pipeline knows, with its input/output sizes.

A task is named by its language instruction (App. C.3), e.g. ``cartpole.balance``. Sizes come
from dm_control's observation and action specs (proprioception is every observation flattened in
spec order). This module imports no simulator, so params can be validated before any compute.

Success (the "success" column of Table 6) is defined from the environment rewards alone, so it
applies equally to generated data, robot rollouts and evaluation episodes: an episode succeeds
when its reward is at least ``success_reward`` on every one of its last ``success_window``
fraction of steps (``pac.envs.is_success``).

Proprioceptive *features* (what the model reads) equal the flattened observation except for a
task's unbounded joint angles (``angle_dims``): each angle theta is read as (sin theta, cos theta),
sin in its place and cos appended (:func:`proprio_features`). The store and rollout files keep the
raw observation; the sampler and the policy server apply the same function. This is a choice the
paper leaves open (its robots' joints are bounded); it was made by measurement on reacher.easy,
whose shoulder hinge is unbounded (docs/experiments/2026-12-03-data-behaviours.md).

Embodiments and tasks are data: the built-in dm_control tasks below are entries of the same kind
as the tasks a params file declares (``embodiments:`` / ``tasks:``, :mod:`pac.config`). A task
is an instruction (the model's language input), its embodiment's sizes, per-dimension action
ranges and control rate, and optionally a simulator. :data:`TASKS` is the one resolver: the
built-ins plus every declaration of the params validated in this process
(:func:`pac.config.validate` calls :meth:`TaskRegistry.declare`), so every process that loads
the params (CLI, Metaflow steps, DVC stages, evaluation workers) resolves the same names.

Actions are stored in the robot's own units. The policy's N_B bins cover [-1, 1]:
:func:`to_unit` maps each dimension's [low, high] onto it for training and :func:`from_unit`
maps back at serving; for the built-in tasks ([-1, 1]) the map is the identity.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import numpy as np

#: what a graded behaviour policy does when it is not the expert (GroupConfig.suboptimal)
SUBOPTIMAL = ("random", "weak")


@dataclass(frozen=True)
class TaskSpec:
    name: str  # the registry name, e.g. "<domain>.<task>" for dm_control
    domain: str  # dm_control domain; a declared robot's embodiment name
    task: str
    num_proprio: int  # N^P of this task (flattened observation size)
    num_actions: int  # N^A of this task
    #: per-dimension action range in the robot's units (a number is used for every dimension)
    action_low: float | tuple[float, ...] = -1.0
    action_high: float | tuple[float, ...] = 1.0
    success: str = ""  # the documented success definition, in words
    success_reward: float = 0.8  # reward threshold ...
    success_window: float = 0.1  # ... held on this final fraction of the episode's steps
    action_repeat: int = 1  # physics steps per control step (dm_control n_sub_steps)
    scripted_expert: bool = False  # pac.envs.expert_action can drive it (data generation)
    angle_dims: tuple[int, ...] = ()  # unbounded joint angles in the observation: (sin, cos)
    #: the weak controller of data generation (``GroupConfig.suboptimal: weak``) acts
    #: ``weak_gain`` x the scripted expert's action; 0 = the task has none (see TASKS below)
    weak_gain: float = 0.0
    instruction: str = ""  # the model's language input; "" = the name (the built-ins)
    simulator: str = "dm_control"  # "dm_control", "ogbench" or "" (no simulator: robot data)
    fps: float = 0.0  # control rate of a task without dm_control (its embodiment's), Hz
    #: the simulator's own evaluation episode length (an OGBench env's time limit); 0: the data's
    episode_steps: int = 0
    embodiment: str = ""  # the declared embodiment's name ("" for the built-ins)
    action_names: tuple[str, ...] = ()
    state_names: tuple[str, ...] = ()
    cameras: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for key in ("action_low", "action_high"):
            value = getattr(self, key)
            if isinstance(value, (int, float)):
                value = (float(value),) * self.num_actions
            object.__setattr__(self, key, tuple(float(v) for v in value))
        if not self.instruction:
            object.__setattr__(self, "instruction", self.name)

    @property
    def num_features(self) -> int:
        """Width of the model's proprioceptive input for this task (see proprio_features)."""
        return self.num_proprio + len(self.angle_dims)

    @property
    def low(self) -> np.ndarray:
        """float32 [N^A] lower action bounds (robot units)."""
        return np.asarray(self.action_low, dtype=np.float32)

    @property
    def high(self) -> np.ndarray:
        """float32 [N^A] upper action bounds (robot units)."""
        return np.asarray(self.action_high, dtype=np.float32)


def to_unit(actions: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Robot actions [..., N^A] -> the policy's bin space: [low, high] -> [-1, 1] per dimension.

    The identity (the input itself, bit for bit) where every range is [-1, 1]: the built-in
    tasks train on exactly the values they store. A choice the paper leaves open: the map uses
    the embodiment's declared physical range, not the data's statistics (LeRobot's stats.json),
    so one robot has one normalisation across datasets and at serving, and data outside it is
    reported at ingest instead of stretching the bins.
    """
    low, high = np.asarray(low, np.float32), np.asarray(high, np.float32)
    if np.all(low == -1.0) and np.all(high == 1.0):
        return actions
    a = np.asarray(actions, dtype=np.float32)
    return (2.0 * (a - low) / (high - low) - 1.0).astype(np.float32)


def from_unit(unit: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Bin-space actions [..., N^A] (clipped to [-1, 1]) -> the robot's units [low, high]."""
    low, high = np.asarray(low, np.float32), np.asarray(high, np.float32)
    u = np.clip(np.asarray(unit, dtype=np.float32), -1.0, 1.0)
    return (low + (u + 1.0) * 0.5 * (high - low)).astype(np.float32)


def proprio_features(spec: TaskSpec, proprio: np.ndarray) -> np.ndarray:
    """Raw observations [..., num_proprio] -> model features [..., num_features] (float32).

    Every entry is kept, except that each angle in ``spec.angle_dims`` becomes its sine, and the
    cosines of those angles are appended in the same order.
    """
    x = np.asarray(proprio, dtype=np.float32)
    if not spec.angle_dims:
        return x
    dims = list(spec.angle_dims)
    out = x.copy()
    out[..., dims] = np.sin(x[..., dims])
    return np.concatenate([out, np.cos(x[..., dims])], axis=-1)


def success_text(success_reward: float, success_window: float) -> str:
    """The success definition in words (TaskSpec.success)."""
    if success_window >= 1.0:
        last = "every step"
    elif success_window == 0.0:
        last = "the final step"
    else:
        last = f"the last {success_window:.0%} of steps"
    return f"reward >= {success_reward:g} on {last}"


def _spec(
    name: str,
    num_proprio: int,
    num_actions: int,
    success_reward: float,
    success_window: float,
    action_repeat: int = 1,
    scripted_expert: bool = False,
    angle_dims: tuple[int, ...] = (),
    weak_gain: float = 0.0,
    dm_task: str | None = None,
) -> TaskSpec:
    domain, task = name.split(".", 1)
    task = dm_task or task
    success = success_text(success_reward, success_window)
    return TaskSpec(
        name, domain, task, num_proprio, num_actions, success=success,
        success_reward=success_reward, success_window=success_window,
        action_repeat=action_repeat, scripted_expert=scripted_expert, angle_dims=angle_dims,
        weak_gain=weak_gain,
    )


# Rewards are dm_control's own (in [0, 1]). Thresholds mean:
#   point_mass: reward >= 0.8 only while the mass is inside the target sphere (near_target = 1);
#   cartpole.balance: upright * centred * small control * small velocity >= 0.75, i.e. the pole
#     within ~30 degrees of vertical and the cart near the centre, on every step (never fell);
#   reacher: reward is 1 exactly while the fingertip touches the target.
# action_repeat stretches the 100-step default episode to a horizon where the task is solvable
# (point_mass: 6 s, its damped mass moves at most ~0.1 m/s; cartpole/reacher: 2 s).
# ``*_native`` variants run at dm_control's own control rate (no action repeat), the rate of data
# recorded from the suite as it is; with data.episode_steps = 1000 they are its own episodes
# (point_mass.easy: 20 s at 50 Hz).
# weak_gain: the timid controller of low-quality data (pac.envs.weak_action: the expert's action
# scaled by the gain), chosen so that alone it scores 20-30% of expert
# (docs/experiments/2026-12-03-data-behaviours.md).
BUILTIN_TASKS: dict[str, TaskSpec] = {
    s.name: s
    for s in (
        _spec("point_mass.easy", 4, 2, 0.8, 0.1, action_repeat=3, scripted_expert=True,
              weak_gain=0.35),
        _spec("point_mass.easy_native", 4, 2, 0.8, 0.1, scripted_expert=True, weak_gain=0.1,
              dm_task="easy"),
        _spec("cartpole.balance", 5, 1, 0.75, 1.0, action_repeat=2, scripted_expert=True,
              weak_gain=0.02),
        _spec("cartpole.swingup", 5, 1, 0.8, 0.1, action_repeat=2),
        # reacher's observation starts with (shoulder, wrist) angles; the shoulder is unbounded
        _spec("reacher.easy", 6, 2, 1.0, 0.1, action_repeat=2, scripted_expert=True,
              angle_dims=(0, 1)),
        _spec("reacher.hard", 6, 2, 1.0, 0.1, action_repeat=2, scripted_expert=True,
              angle_dims=(0, 1)),
        _spec("pendulum.swingup", 3, 1, 0.8, 0.1),
        _spec("ball_in_cup.catch", 8, 2, 1.0, 0.1),
        _spec("finger.spin", 9, 2, 0.8, 0.1),
        _spec("walker.stand", 24, 6, 0.8, 0.1),
    )
}


class TaskRegistry(Mapping[str, TaskSpec]):
    """The resolver of task names: the built-ins plus the tasks declared by the params last
    validated in this process (a built-in name cannot be declared, :mod:`pac.config` refuses
    it)."""

    def __init__(self, builtin: dict[str, TaskSpec]):
        self._builtin = dict(builtin)
        self._declared: dict[str, TaskSpec] = {}

    def __getitem__(self, name: str) -> TaskSpec:
        if name in self._declared:
            return self._declared[name]
        return self._builtin[name]

    def __iter__(self) -> Iterator[str]:
        return iter({**self._builtin, **self._declared})

    def __len__(self) -> int:
        return len({**self._builtin, **self._declared})

    def declare(self, specs: dict[str, TaskSpec]) -> None:
        """Make `specs` the declared tasks (replacing earlier declarations: the registry knows
        the params this process works with); built-in names are refused."""
        taken = sorted(set(specs) & set(self._builtin))
        if taken:
            raise ValueError(f"task {taken[0]!r} is a built-in task; declare it under another name")
        self._declared = dict(specs)

    @property
    def declared(self) -> dict[str, TaskSpec]:
        """The declared tasks (to hand to worker processes: :meth:`declare` there)."""
        return dict(self._declared)

    def resolve(self, name: str) -> TaskSpec:
        """The spec of `name`, or a ValueError naming the known tasks."""
        if name not in self:
            raise ValueError(f"unknown task {name!r}; known tasks: {', '.join(sorted(self))}"
                             " (declare a robot's tasks in params: docs/data.md)")
        return self[name]

    def matching(self, text: str) -> list[str]:
        """Tasks whose name or instruction is `text` (a dataset's task string), names first."""
        by_name = [text] if text in self else []
        return by_name + sorted(t for t in self if t != text and self[t].instruction == text)


#: every task this process knows: the built-ins and the loaded params' declarations
TASKS = TaskRegistry(BUILTIN_TASKS)

@dataclass(frozen=True)
class OGBenchEnv:
    """An OGBench manipulation env (Park et al., ICLR 2025) as a task's simulator: its sizes,
    control rate, evaluation episode length (its single-task envs' time limit) and task count."""

    num_proprio: int
    num_actions: int
    fps: float
    episode_steps: int
    num_tasks: int = 5


#: the OGBench envs a task can declare (``simulator: {ogbench: <env>, task_id: k}``), as the
#: package registers them (ogbench 1.2.2); stated here so params validate without importing it
OGBENCH_ENVS: dict[str, OGBenchEnv] = {
    "cube-single-v0": OGBenchEnv(28, 5, 20.0, 200),
    "cube-double-v0": OGBenchEnv(37, 5, 20.0, 500),
}
#: OGBench's success (the last step's ``success``) read from its single-task reward, which
#: rates the state before each action: sum over cubes of [at goal] - n, 0 exactly when every
#: cube is within 4 cm of its goal, and the episode ends there
OGBENCH_SUCCESS = ("every cube within 4 cm of its goal at the episode's end"
                   " (reward 0 on the final step)")


def ogbench_spec(name: str, env: str, task_id: int, **fields) -> TaskSpec:
    """The task of evaluation task `task_id` of OGBench env `env` (its single-task env
    ``<env family>-singletask-task<k>-v0``: fixed start and goal, the benchmark's reward)."""
    e = OGBENCH_ENVS[env]
    fields.setdefault("success", OGBENCH_SUCCESS)
    return TaskSpec(name, env.removesuffix("-v0"), f"task{task_id}", e.num_proprio,
                    e.num_actions, success_reward=0.0, success_window=0.0,
                    scripted_expert=True, simulator="ogbench", fps=e.fps,
                    episode_steps=e.episode_steps, **fields)


def ogbench_env_id(spec: TaskSpec) -> str:
    """The gymnasium id of an OGBench task's single-task evaluation env."""
    return f"{spec.domain}-singletask-{spec.task}-v0"  # e.g. cube-single-singletask-task1-v0


#: tasks whose data generation can use ``suboptimal: weak`` (a timid controller, weak_gain != 0)
WEAK_TASKS: tuple[str, ...] = tuple(sorted(t for t, s in BUILTIN_TASKS.items() if s.weak_gain))
