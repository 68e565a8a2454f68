"""A robot dataset written by the real lerobot package (LeRobotDataset.create / add_frame /
save_episode / finalize), for `pac ingest` to read (tests/test_your_robot.py).

A 14-value state, 7 joint targets in radians (outside [-1, 1]), one camera as an mp4 video
stream (lerobot's default encoder: AV1 via libsvtav1, one encoder thread), three free-text
instructions with three episodes each, a sparse success reward (`next.reward` 1 on the final
frame of a successful episode, `next.done` there). Beside
the dataset, ``truth.npz`` holds what was written: per episode its state, action, reward and
the camera frames at 80x80 (the frames are a per-frame red level and linear green / blue
gradients, whose area average over an 80x80 cell is the gradient at the cell's centre).

    PYTHONPATH=benchmarks/.lerobot:$PWD .venv/bin/python benchmarks/lerobot_write.py OUT
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

FPS = 30
#: episode e is given instruction e % 3, STEPS[e] frames and a success reward when SUCCESS[e]
INSTRUCTIONS = ("pick up the red cube", "open the top drawer", "push the blue block left")
STEPS = (12, 9, 14, 10, 13, 8, 11, 9, 12)
SUCCESS = (True, False, True, False, True, True, False, True, False)
HEIGHT, WIDTH = 96, 128
STATE, ACTION = 14, 7
ACTION_RANGE = 2.5  # joint targets in radians: [-2.5, 2.5]
CAMERA = "observation.images.front"


def import_lerobot():
    """lerobot's dataset class. torchvision's wheel is the CUDA build: its C ops cannot load
    beside the CPU torch, and torchvision registers fake kernels for ``torchvision::nms`` and
    ``qnms`` without checking that the ops exist; declaring their schemas (no kernel) lets it
    import. The dataset writer calls no torchvision op."""
    import torch

    try:
        torch.ops.torchvision.nms  # noqa: B018 - present when the C ops did load
    except (AttributeError, RuntimeError):
        lib = torch.library.Library("torchvision", "DEF")  # noqa: TOR901
        for op in ("nms", "qnms"):
            lib.define(f"{op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        import_lerobot.keep = lib  # the schemas live as long as their Library object
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    return LeRobotDataset


def red(episode: int, frame: int) -> int:
    """The red level of a frame: far (> 10) from the frame before and after it."""
    return 30 + (67 * (frame + 7 * episode)) % 190


def frames(episode: int, steps: int, height: int, width: int) -> np.ndarray:
    """[T, height, width, 3] uint8: red per frame, green a gradient along x, blue along y.
    At height = width = 80 the pixel centres are the 80x80 cell centres: what a resize to
    80x80 by area averaging gives (the ingest's reference)."""
    out = np.empty((steps, height, width, 3), np.float64)
    for t in range(steps):
        out[t, :, :, 0] = red(episode, t)
        out[t, :, :, 1] = (40 + 180 * (np.arange(width) + 0.5) / width)[None, :]
        out[t, :, :, 2] = (30 + 160 * (np.arange(height) + 0.5) / height)[:, None]
    return out


def write(root: Path, seed: int = 0) -> dict[str, np.ndarray]:
    """Write the dataset at `root` (must not exist) with lerobot; return what was written."""
    LeRobotDataset = import_lerobot()  # noqa: N806
    features = {
        "observation.state": {"dtype": "float32", "shape": (STATE,),
                              "names": [f"joint_{i}" for i in range(STATE)]},
        "action": {"dtype": "float32", "shape": (ACTION,),
                   "names": [f"target_{i}" for i in range(ACTION)]},
        "next.reward": {"dtype": "float32", "shape": (1,), "names": None},
        "next.done": {"dtype": "bool", "shape": (1,), "names": None},
        CAMERA: {"dtype": "video", "shape": (HEIGHT, WIDTH, 3),
                 "names": ["height", "width", "channels"]},
    }
    dataset = LeRobotDataset.create("pac/robot_arm", FPS, features, root=root,
                                    robot_type="arm14", use_videos=True,
                                    encoder_threads=1)
    rng = np.random.default_rng(seed)
    truth: dict[str, np.ndarray] = {}
    for e, (steps, success) in enumerate(zip(STEPS, SUCCESS)):
        text = INSTRUCTIONS[e % len(INSTRUCTIONS)]
        state = rng.normal(0.0, 2.0, (steps, STATE)).astype(np.float32)
        action = rng.uniform(-ACTION_RANGE, ACTION_RANGE, (steps, ACTION)).astype(np.float32)
        reward = np.zeros(steps, np.float32)
        reward[-1] = 1.0 if success else 0.0
        images = np.round(frames(e, steps, HEIGHT, WIDTH)).astype(np.uint8)
        for t in range(steps):
            dataset.add_frame({
                "observation.state": state[t], "action": action[t],
                "next.reward": reward[t:t + 1], "next.done": np.array([t == steps - 1]),
                CAMERA: images[t], "task": text,
            })
        dataset.save_episode()
        truth |= {f"state_{e}": state, f"action_{e}": action, f"reward_{e}": reward,
                  f"frames_{e}": frames(e, steps, 80, 80)}
    dataset.finalize()
    return truth


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="a new folder: OUT/robot_arm and OUT/truth.npz")
    args = parser.parse_args()
    truth = write(args.out / "robot_arm")
    np.savez(args.out / "truth.npz", **truth)
    print(f"wrote {args.out / 'robot_arm'}: {len(STEPS)} episodes, {sum(STEPS)} frames")


if __name__ == "__main__":
    main()
