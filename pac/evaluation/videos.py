"""Evaluation videos for review: per task, a success and a failure episode as captioned GIFs
(``videos/<task>_ep<i>_<success|failure>_return<R>.gif``).

The episodes are chosen after the evaluation from its per-episode results
(:func:`choose_episodes`) and only those are played again with rendering (a ``Job`` with a
``video`` folder in :mod:`pac.evaluation.evaluator`): each episode's seed fixes it, so the replay
is the same episode. Frames are rendered natively at :data:`VIDEO_SIZE` pixels, not upscaled from
the policy's 80x80 inputs (App. C.3), which stay as they are.

Measured on 2 shared cores (MUJOCO_GL=egl, Mesa llvmpipe; cartpole.balance, 100-step episodes,
4 episodes, random policy, 1 worker): the evaluation takes 1.6 s without videos; each video
adds 1.8 s when rendered at 80x80 during the rollout and upscaled 2x (the former way), 2.2 s
when replayed and rendered at 160x160 (this way; the replay's physics and policy cost ~0.03 s,
the rest is rendering at ~20 ms a frame and GIF encoding). Rendering during the rollout instead
would have to render every episode, since the outcome is only known at its end: ~2.1 s times
``episodes_per_task`` a task, against ~2.2 s times ``videos_per_task`` for the replay.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from pac.io import atomic_write

VIDEO_FPS = 25

#: Review videos are rendered natively at this many pixels a side.
VIDEO_SIZE = 160


def choose_episodes(results: Iterable[dict[str, Any]], per_task: int) -> list[dict[str, Any]]:
    """At most `per_task` episodes of each task for videos: the first success, then the first
    failure (where both exist), then further episodes in order. ``per_task=0``: none."""
    by_task: dict[str, list[dict[str, Any]]] = {}
    for r in results:
        by_task.setdefault(r["task"], []).append(r)
    chosen: list[dict[str, Any]] = []
    for episodes in by_task.values():
        episodes = sorted(episodes, key=lambda r: r["episode"])
        first = [next((r for r in episodes if r["success"] == s), None) for s in (True, False)]
        picks = [r for r in first if r is not None]
        picks += [r for r in episodes if r not in picks]
        chosen += picks[:per_task]
    return chosen


def video_name(task: str, episode: int, total_return: float, success: bool) -> str:
    """The file name of an episode's video: task, episode, outcome and return."""
    outcome = "success" if success else "failure"
    return f"{task}_ep{episode}_{outcome}_return{total_return:.1f}.gif"


def video_label(task: str, episode: int, total_return: float, success: bool) -> str:
    """The caption under an episode's video (two lines)."""
    return (f"{task} #{episode}\nreturn {total_return:.1f}  "
            + ("success" if success else "failure"))


def label_frames(frames: np.ndarray, label: str, scale: int = 1) -> np.ndarray:
    """Frames (upscaled `scale` times, nearest neighbours) with a caption bar underneath;
    the label's lines are drawn one under the other."""
    from PIL import Image, ImageDraw

    big = np.asarray(frames, dtype=np.uint8)
    if scale != 1:
        big = np.repeat(np.repeat(big, scale, 1), scale, 2)
    t, h, w, _ = big.shape
    lines = label.splitlines()
    bar = Image.new("RGB", (w, 12 * len(lines) + 2), (0, 0, 0))
    draw = ImageDraw.Draw(bar)
    for i, line in enumerate(lines):
        draw.text((2, 1 + 12 * i), line, fill=(255, 255, 255))
    caption = np.broadcast_to(np.asarray(bar), (t, *np.asarray(bar).shape))
    return np.concatenate([big, caption], axis=1)


def _write_gif(path: Path, frames: np.ndarray, label: str = "") -> None:
    import imageio.v3 as iio

    if label:
        frames = label_frames(frames, label)
    atomic_write(
        path,
        lambda fh: fh.write(iio.imwrite("<bytes>", frames, extension=".gif",
                                        duration=1000 // VIDEO_FPS, loop=0)),
    )
