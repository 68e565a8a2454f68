"""Evaluation videos: the first episodes of each task as captioned GIFs (``videos/*.gif``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pac.io import atomic_write

VIDEO_FPS = 25


#: Videos are shown at least this wide: the 80x80 renders (what the policy sees, App. C.3)
#: upscaled 2x with nearest neighbours; rendering at 160 would cost 4x the render time.
VIDEO_SCALE = 2


def label_frames(frames: np.ndarray, label: str, scale: int = VIDEO_SCALE) -> np.ndarray:
    """Frames upscaled `scale` times with a caption bar (task, return, success) underneath;
    the label's lines are drawn one under the other."""
    from PIL import Image, ImageDraw

    big = np.repeat(np.repeat(np.asarray(frames, dtype=np.uint8), scale, 1), scale, 2)
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
        lambda p: iio.imwrite(p, frames, extension=".gif", duration=1000 // VIDEO_FPS, loop=0),
    )
