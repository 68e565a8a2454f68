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
whose shoulder hinge is unbounded: PAC on the default data (1,500 updates, 20 evaluation
episodes) reached 8.2 % of expert with the raw angles and 42.4 % with (sin, cos), same seed and
expert; with the expert's present gains 47.7 and 50.2 % over two seeds (BENCHMARKS.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: what a graded behaviour policy does when it is not the expert (GroupConfig.suboptimal)
SUBOPTIMAL = ("random", "weak")


@dataclass(frozen=True)
class TaskSpec:
    name: str  # instruction, "<domain>.<task>"
    domain: str
    task: str
    num_proprio: int  # N^P of this task (flattened observation size)
    num_actions: int  # N^A of this task
    action_low: float = -1.0
    action_high: float = 1.0
    success: str = ""  # the documented success definition, in words
    success_reward: float = 0.8  # reward threshold ...
    success_window: float = 0.1  # ... held on this final fraction of the episode's steps
    action_repeat: int = 1  # physics steps per control step (dm_control n_sub_steps)
    scripted_expert: bool = False  # pac.envs.expert_action can drive it (data generation)
    angle_dims: tuple[int, ...] = ()  # unbounded joint angles in the observation: (sin, cos)
    #: the weak controller of data generation (``GroupConfig.suboptimal: weak``) acts
    #: ``weak_gain`` x the scripted expert's action; 0 = the task has none (see TASKS below)
    weak_gain: float = 0.0

    @property
    def num_features(self) -> int:
        """Width of the model's proprioceptive input for this task (see proprio_features)."""
        return self.num_proprio + len(self.angle_dims)


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
    last = "every step" if success_window >= 1.0 else f"the last {success_window:.0%} of steps"
    success = f"reward >= {success_reward:g} on {last}"
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
# scaled by the gain), chosen so that alone it scores 20-30% of expert, measured over 8 episodes
# against the expert and uniform random references of the evaluation (% of expert, as pac eval):
#   point_mass.easy 0.35: 28.0% (0.3: 22.6, 0.4: 36.1, 0.5: 55.4) over 100 steps;
#   point_mass.easy_native 0.1: 26.6% (reward 240.6 against the expert's 902.1) over 1000 steps;
#   cartpole.balance 0.02: 31.6% (0.01: 26.4, 0.03: 38.3) over 100 steps; the task is forgiving
#     (the zero action scores 22.6%), so its timid controller has 2% of the expert's authority.
# With the data's N(0, 0.1) action noise (5 episodes, tests/test_envs.py): 38.3, 15.0, 20.4%.
TASKS: dict[str, TaskSpec] = {
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

#: tasks whose data generation can use ``suboptimal: weak`` (a timid controller, weak_gain != 0)
WEAK_TASKS: tuple[str, ...] = tuple(sorted(t for t, s in TASKS.items() if s.weak_gain))
