"""A robot declared in params for the embodiment tests: a 7-joint arm with a 14-value state."""

from __future__ import annotations

from pathlib import Path

from pac.config import DEFAULT_PARAMS

#: joint position targets in radians, the gripper opening in metres
LOW = [-3.1, -2.0, -2.6, -3.1, -2.0, -3.1, 0.0]
HIGH = [3.1, 2.0, 2.6, 3.1, 2.0, 3.1, 0.085]
#: the arm, one task of it and dm_control's reacher at its own 50 Hz
DECLARATIONS = f"""
embodiments:
  arm7:
    state_size: 14
    action_names: [j1, j2, j3, j4, j5, j6, gripper]
    action_low: {LOW}
    action_high: {HIGH}
    fps: 30
    cameras: [wrist]
tasks:
  pick_red: {{instruction: pick up the red cube, embodiment: arm7}}
  reacher.easy_50hz:
    instruction: reacher.easy
    simulator: {{dm_control: reacher.easy, action_repeat: 1}}
model: {{num_proprio: 14, num_actions: 7, vocab_size: 96}}
"""


def write_params(folder: Path, body: str, name: str = "robot.yaml") -> Path:
    """A params file extending params/default.yaml with `body`."""
    path = folder / name
    path.write_text(f"extends: {DEFAULT_PARAMS}\n{body}")
    return path
