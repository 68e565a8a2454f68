"""The task registry: every task the pipeline knows, with its input/output sizes.

A task is named by its language instruction (App. C.3), e.g. ``cartpole.balance``. Sizes come
from dm_control's observation and action specs (proprioception is every observation flattened in
spec order). This module imports no simulator, so params can be validated before any compute.
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
    success: str = ""  # the documented success definition (see pac.data.generate)


def _spec(name: str, num_proprio: int, num_actions: int, success: str) -> TaskSpec:
    domain, task = name.split(".", 1)
    return TaskSpec(name, domain, task, num_proprio, num_actions, success=success)


TASKS: dict[str, TaskSpec] = {
    s.name: s
    for s in (
        _spec("point_mass.easy", 4, 2, "mass inside the target for the last 10% of steps"),
        _spec("cartpole.balance", 5, 1, "pole upright (reward > 0.8) on every step"),
        _spec("cartpole.swingup", 5, 1, "pole upright (reward > 0.8) for the last 10% of steps"),
        _spec("reacher.easy", 6, 2, "fingertip inside the target for the last 10% of steps"),
        _spec("pendulum.swingup", 3, 1, "pole upright (reward 1) for the last 10% of steps"),
        _spec("ball_in_cup.catch", 8, 2, "ball in the cup for the last 10% of steps"),
        _spec("finger.spin", 9, 2, "mean reward > 0.5"),
        _spec("walker.stand", 24, 6, "mean reward > 0.8"),
    )
}
