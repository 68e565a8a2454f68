"""LeRobot camera streams -> an episode's images [T, cams, 80, 80, 3] uint8 (pac.data.store).

Two kinds of camera feature, read in the order meta/info.json lists them:

- ``video``: ``videos/<key>/chunk-CCC/file-FFF.mp4`` (lerobot's fixed layout) holds several
  episodes back to back; meta/episodes gives each episode's ``videos/<key>/chunk_index``,
  ``file_index``, ``from_timestamp`` and ``to_timestamp``. Decoded with PyAV (FFmpeg: AV1, H.264,
  whatever lerobot's encoder wrote), seeking to the episode's window, one episode at a time.
- ``image``: a parquet column of structs ``{bytes: PNG, path}`` (datasets' Image feature).

Every frame is resized to IMAGE_SHAPE (swscale's area filter) as it is decoded, so memory holds
one full-size frame and the episode's 80x80 frames. The frames of an episode are the decoded
frames whose time t lies in [from - 1/(2 fps), to - 1/(2 fps)); their count must equal the
episode's rows, and frame k must lie within FRAME_TOLERANCE_S + 1/fps of from + timestamp_k
(lerobot's tolerance_s plus one frame of codec slack, for encoders that shift the first frame).
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

import numpy as np

from pac.data.store import IMAGE_SHAPE
from pac.rlft.ingest.checks import Rejected, describe, quote
from pac.rlft.ingest.rollout_file import open_regular

CAMERA_DTYPES = ("video", "image")
VIDEO_PATH = "videos/{key}/chunk-{chunk:03d}/file-{file:03d}.mp4"  # lerobot's DEFAULT_VIDEO_PATH
VIDEO_COLUMNS = ("chunk_index", "file_index", "from_timestamp", "to_timestamp")
#: lerobot's own tolerance between a frame's time and the time asked for (``tolerance_s``)
FRAME_TOLERANCE_S = 1e-4
MAX_SOURCE_PIXELS = 4096 * 4096  # a larger camera frame is refused before it is decoded


def camera_keys(features: dict[str, Any]) -> list[str]:
    """The camera features (video and image), in the order meta/info.json lists them."""
    keys = [k for k, f in features.items() if f["dtype"] in CAMERA_DTYPES]
    for key in keys:
        if not key or any(part in ("", ".", "..") for part in key.split("/")) or "\\" in key:
            raise Rejected("lerobot-meta", f"camera feature name {quote(key)} is not a folder name")
    return keys


def video_index(index, features: dict[str, Any], cameras: list[str]) -> dict[int, dict[str, tuple]]:
    """episode_index -> {video key: (chunk, file, from_timestamp, to_timestamp)} from the
    meta/episodes table; an episode without a value has no entry (its episode is rejected)."""
    videos = [k for k in cameras if features[k]["dtype"] == "video"]
    out: dict[int, dict[str, tuple]] = {}
    episodes = index.column("episode_index").to_pylist()
    for key in videos:
        names = [f"videos/{key}/{c}" for c in VIDEO_COLUMNS]
        missing = [n for n in names if n not in index.column_names]
        if missing:
            raise Rejected("missing", f"meta/episodes lacks column(s) {missing} of video {key}")
        values = zip(*(index.column(n).to_pylist() for n in names))
        for ep, (chunk, file, start, stop) in zip(episodes, values):
            if _integral(chunk) and _integral(file) and _finite(start) and _finite(stop):
                out.setdefault(int(ep), {})[key] = (int(chunk), int(file), float(start),
                                                    float(stop))
    return out


def image_columns(frames, features: dict[str, Any], cameras: list[str]) -> dict[str, Any]:
    """video key -> None, image key -> its parquet column of PNG bytes (still compressed;
    dictionary-encoded as the reader reads byte columns)."""
    import pyarrow as pa

    out: dict[str, Any] = {}
    for key in cameras:
        if features[key]["dtype"] != "image":
            out[key] = None
            continue
        if key not in frames.column_names:
            raise Rejected("missing", f"meta/info.json declares image {quote(key)}; the data"
                           " parquet files have no such column")
        col = frames.column(key).combine_chunks()
        if pa.types.is_struct(col.type) and col.type.get_field_index("bytes") >= 0:
            col = col.field("bytes")
        kind = col.type.value_type if pa.types.is_dictionary(col.type) else col.type
        if not (pa.types.is_binary(kind) or pa.types.is_large_binary(kind)):
            raise Rejected("dtype", f"image column {quote(key)} holds {col.type}; expected"
                           " {bytes, path} structs of PNG files")
        out[key] = col
    return out


def episode_images(
    root: Path,
    ep: int,
    rows: np.ndarray,
    timestamps: np.ndarray | None,
    fps: float,
    videos: dict[int, dict[str, tuple]],
    images: dict[str, Any],
) -> np.ndarray | None:
    """The episode's frames [T, cams, 80, 80, 3] (None without cameras), or Rejected."""
    if not images:
        return None
    steps = len(rows)
    ts = np.arange(steps) / fps if timestamps is None else np.asarray(timestamps, np.float64)
    out = np.empty((steps, len(images), *IMAGE_SHAPE), np.uint8)
    for cam, (key, column) in enumerate(images.items()):
        if column is not None:
            for t, row in enumerate(rows):
                out[t, cam] = _decode_png(column[int(row)].as_py(), key, t)
            continue
        where = videos.get(ep, {}).get(key)
        if where is None:
            raise Rejected("video", f"camera {key}: meta/episodes gives no video file and"
                           " timestamps for it")
        chunk, file, start, stop = where
        path = root / VIDEO_PATH.format(key=key, chunk=chunk, file=file)
        out[:, cam] = _decode_window(path, f"camera {key}: {path.relative_to(root)}",
                                     start, stop, ts, fps)
    return out


def _decode_window(path: Path, what: str, start: float, stop: float, ts: np.ndarray,
                   fps: float) -> np.ndarray:
    """The frames of [start, stop) of the mp4 at `path`, resized, checked against `ts`."""
    import av

    steps, half = len(ts), 0.5 / fps
    frames: list[np.ndarray] = []
    times: list[float] = []
    try:
        fh = open_regular(path)
    except FileNotFoundError as exc:
        raise Rejected("video", f"{what} is missing") from exc
    try:
        with fh, av.open(fh, mode="r") as container:
            if not container.streams.video:
                raise Rejected("video", f"{what} holds no video stream")
            stream = container.streams.video[0]
            if stream.width * stream.height > MAX_SOURCE_PIXELS:
                raise Rejected("video", f"{what}: frames of {stream.width}x{stream.height}"
                               f" pixels, more than {MAX_SOURCE_PIXELS}")
            if start - half > 0 and stream.time_base:
                container.seek(int((start - half) / stream.time_base), stream=stream,
                               backward=True)
            for frame in container.decode(stream):
                if frame.time is None:
                    raise Rejected("video", f"{what}: a frame without a timestamp")
                if frame.time < start - half:
                    continue
                if frame.time >= stop - half or len(frames) > steps:
                    break
                frames.append(_resize(frame))
                times.append(frame.time)
    except Rejected:
        raise
    except Exception as exc:  # noqa: BLE001 - FFmpeg's errors on cut or corrupt files
        raise Rejected("video", f"{what}: undecodable ({describe(exc)}) after"
                       f" {len(frames)} frame(s) of the episode") from exc
    if len(frames) != steps:
        more = "more than " if len(frames) > steps else ""
        raise Rejected("video", f"{what} holds {more}{len(frames)} frame(s) in [{start:g},"
                       f" {stop:g}) s; the episode has {steps} rows")
    off = np.abs(np.asarray(times) - start - ts) > FRAME_TOLERANCE_S + 1.0 / fps
    if off.any():
        k = int(np.flatnonzero(off)[0])
        raise Rejected("video", f"{what}: frame {k} is at {times[k] - start:g} s of the episode,"
                       f" its row's timestamp is {ts[k]:g} s")
    return np.stack(frames)


def _decode_png(data: bytes | None, key: str, t: int) -> np.ndarray:
    """One stored image (PNG or any format Pillow reads) -> [80, 80, 3] uint8."""
    from PIL import Image

    if data is None:
        raise Rejected("image", f"camera {key}: no image at row {t}")
    try:
        with Image.open(io.BytesIO(data)) as img:
            if img.width * img.height > MAX_SOURCE_PIXELS:
                raise Rejected("image", f"camera {key}: the image of row {t} has"
                               f" {img.width}x{img.height} pixels, more than {MAX_SOURCE_PIXELS}")
            rgb = np.asarray(img.convert("RGB"))
    except Rejected:
        raise
    except Exception as exc:  # noqa: BLE001 - Pillow's errors on cut or corrupt images
        raise Rejected("image", f"camera {key}: the image of row {t} is undecodable"
                       f" ({describe(exc)})") from exc
    import av

    return _resize(av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24"))


def _resize(frame) -> np.ndarray:
    """A decoded frame -> [80, 80, 3] RGB uint8 (area averaging: no aliasing on downscale).

    Converted to RGB at full size first: swscale's YUV -> RGB conversion fused with the
    downscale shifts colours by ~3 levels, the two steps by ~1."""
    height, width, _ = IMAGE_SHAPE
    return frame.reformat(format="rgb24").reformat(
        width=width, height=height, interpolation="AREA").to_ndarray()


def _integral(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
