"""The task registry: every task the pipeline knows, with its input/output sizes.

A task is named by its language instruction (App. C.3), e.g. ``cartpole.balance``. Sizes come
from dm_control's observation and action specs (proprioception is every observation flattened in
spec order). This module imports no simulator, so params can be validated before any compute.

Success (the "success" column of Table 6) is defined from the environment rewards alone, so it
applies equally to generated data, robot rollouts and evaluation episodes: an episode succeeds
when its reward is at least ``success_reward`` on every one of its last ``success_window``
fraction of steps (``pac.envs.is_success``).
"""

from __future__ import annotations

from dataclasses import dataclass


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


def _spec(
    name: str,
    num_proprio: int,
    num_actions: int,
    success_reward: float,
    success_window: float,
    action_repeat: int = 1,
    scripted_expert: bool = False,
) -> TaskSpec:
    domain, task = name.split(".", 1)
    last = "every step" if success_window >= 1.0 else f"the last {success_window:.0%} of steps"
    success = f"reward >= {success_reward:g} on {last}"
    return TaskSpec(
        name, domain, task, num_proprio, num_actions, success=success,
        success_reward=success_reward, success_window=success_window,
        action_repeat=action_repeat, scripted_expert=scripted_expert,
    )


# Rewards are dm_control's own (in [0, 1]). Thresholds mean:
#   point_mass: reward >= 0.8 only while the mass is inside the target sphere (near_target = 1);
#   cartpole.balance: upright * centred * small control * small velocity >= 0.75, i.e. the pole
#     within ~30 degrees of vertical and the cart near the centre, on every step (never fell);
#   reacher: reward is 1 exactly while the fingertip touches the target.
# action_repeat stretches the 100-step default episode to a horizon where the task is solvable
# (point_mass: 6 s, its damped mass moves at most ~0.1 m/s; cartpole/reacher: 2 s).
TASKS: dict[str, TaskSpec] = {
    s.name: s
    for s in (
        _spec("point_mass.easy", 4, 2, 0.8, 0.1, action_repeat=3, scripted_expert=True),
        _spec("cartpole.balance", 5, 1, 0.75, 1.0, action_repeat=2, scripted_expert=True),
        _spec("cartpole.swingup", 5, 1, 0.8, 0.1, action_repeat=2),
        _spec("reacher.easy", 6, 2, 1.0, 0.1, action_repeat=2, scripted_expert=True),
        _spec("reacher.hard", 6, 2, 1.0, 0.1, action_repeat=2, scripted_expert=True),
        _spec("pendulum.swingup", 3, 1, 0.8, 0.1),
        _spec("ball_in_cup.catch", 8, 2, 1.0, 0.1),
        _spec("finger.spin", 9, 2, 0.8, 0.1),
        _spec("walker.stand", 24, 6, 0.8, 0.1),
    )
}
