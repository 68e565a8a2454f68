"""LeRobot camera features (mp4 `video` streams, PNG `image` columns) -> the store's images.

The frames are smooth, known functions of the pixel position and the frame number, so the
stored 80x80 frames are checked against the same functions sampled at the 80x80 cell centres
(the area average of a linear gradient is its value at the centre), not against a decoder's
own output. Codec tolerance: mean absolute error < 3 (of 255) per frame, at lerobot's
encoder settings (yuv420p, crf 30); the next frame's content is > 10 away, so a frame shifted
by one fails.
"""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pytest
from ingest_corpus import make_episode, write_lerobot, write_mp4

from pac.data import EpisodeStore, store_root
from pac.rlft.ingest import PROCESSED, QUARANTINE

TASK = "point_mass.easy"
MAE = 3.0  # codec tolerance on 0-255 after resizing


def _pac_ingest(*args: str) -> int:
    from pac.cli import main

    return main(["ingest", *args, "--no-track", "--no-dvc"])


def _has_encoder(name: str) -> bool:
    try:
        av.codec.Codec(name, "w")
    except Exception:  # noqa: BLE001 - the wheel's FFmpeg lacks this encoder
        return False
    return True


H264 = pytest.param("libx264", marks=pytest.mark.skipif(
    not _has_encoder("libx264"), reason="this PyAV wheel's FFmpeg has no libx264 encoder"))
AV1 = pytest.param("libsvtav1", marks=pytest.mark.skipif(
    not _has_encoder("libsvtav1"), reason="this PyAV wheel's FFmpeg has no libsvtav1 encoder"))


def colour(episode: int, frame: int, camera: int) -> int:
    """The red level of a frame: far (> 10) from the frame before and after it."""
    return 30 + (67 * (frame + 7 * episode) + 101 * camera) % 190


def clip(episode: int, steps: int, camera: int = 0, size=(96, 128)) -> np.ndarray:
    """[T, H, W, 3]: red one level per frame, green a gradient along x, blue along y."""
    h, w = size
    out = np.empty((steps, h, w, 3), np.uint8)
    for t in range(steps):
        out[t, :, :, 0] = colour(episode, t, camera)
        out[t, :, :, 1] = np.round(40 + 180 * (np.arange(w) + 0.5) / w)[None, :]
        out[t, :, :, 2] = np.round(30 + 160 * (np.arange(h) + 0.5) / h)[:, None]
    return out


def expected(episode: int, steps: int, camera: int = 0) -> np.ndarray:
    """What `clip` is at 80x80: the same functions at the 80x80 cell centres."""
    centres = (np.arange(80) + 0.5) / 80
    out = np.empty((steps, 80, 80, 3), np.float64)
    for t in range(steps):
        out[t, :, :, 0] = colour(episode, t, camera)
        out[t, :, :, 1] = (40 + 180 * centres)[None, :]
        out[t, :, :, 2] = (30 + 160 * centres)[:, None]
    return out


def _stored(data_root: Path) -> dict[str, np.ndarray]:
    store = EpisodeStore(store_root(data_root), verify=True)
    out = {}
    for _, row in store.episodes.iterrows():
        shard = next(s for s in store.shards if s.key == row["shard"])
        out[row["origin"]] = np.asarray(shard.images[row["start"]: row["start"] + row["length"]])
    return out


def _errors(stored: np.ndarray, want: np.ndarray) -> np.ndarray:
    """Mean absolute error of each frame."""
    return np.abs(stored.astype(np.float64) - want).mean(axis=(1, 2, 3))


@pytest.mark.parametrize("codec", [H264, AV1])
def test_video_frames_are_stored_within_the_codec_tolerance(tmp_path, codec):
    landing, data_root = tmp_path / "landing", tmp_path / "data"
    steps = [6, 9, 5]
    episodes = [make_episode(TASK, steps=n, seed=i) for i, n in enumerate(steps)]
    clips = [clip(e, n) for e, n in enumerate(steps)]
    write_lerobot(landing / "cam", episodes, cameras={"observation.images.top": (codec, clips)})

    assert _pac_ingest(str(landing), "--data-root", str(data_root)) == 0

    stored = _stored(data_root)
    assert sorted(stored) == [f"cam#episode_{e}" for e in range(3)]
    for e, n in enumerate(steps):
        images = stored[f"cam#episode_{e}"]
        assert images.shape == (n, 1, 80, 80, 3) and images.dtype == np.uint8
        errors = _errors(images[:, 0], expected(e, n))
        assert errors.max() < MAE, (codec, e, errors)
        # a frame shifted by one would not pass: the neighbour's content is far away
        assert _errors(images[1:, 0], expected(e, n)[:-1]).min() > 10


def test_two_cameras_in_info_json_order_video_and_png(tmp_path):
    """An `image` camera listed first and a `video` camera second: images[:, 0] is the PNG one."""
    landing, data_root = tmp_path / "landing", tmp_path / "data"
    steps = [5, 7]
    episodes = [make_episode(TASK, steps=n, seed=i) for i, n in enumerate(steps)]
    write_lerobot(landing / "two", episodes, cameras={
        "observation.images.wrist": ("png", [clip(e, n, camera=1, size=(60, 90))
                                             for e, n in enumerate(steps)]),
        "observation.images.top": ("libx264", [clip(e, n, camera=0)
                                               for e, n in enumerate(steps)]),
    })
    features = list(json.loads((landing / "two" / "meta" / "info.json").read_text())["features"])
    assert features.index("observation.images.wrist") < features.index("observation.images.top")

    assert _pac_ingest(str(landing), "--data-root", str(data_root)) == 0

    stored = _stored(data_root)
    for e, n in enumerate(steps):
        images = stored[f"two#episode_{e}"]
        assert images.shape == (n, 2, 80, 80, 3)
        # PNG is lossless: only the resize's rounding is left
        assert _errors(images[:, 0], expected(e, n, camera=1)).max() < 1.0
        assert _errors(images[:, 1], expected(e, n, camera=0)).max() < MAE


def test_frame_count_mismatch_rejects_only_that_episode(tmp_path):
    """meta/episodes gives episode 1 a window one frame short of its 8 rows."""
    import pandas as pd

    landing, data_root = tmp_path / "landing", tmp_path / "data"
    steps = [6, 8, 5]
    episodes = [make_episode(TASK, steps=n, seed=i) for i, n in enumerate(steps)]
    write_lerobot(landing / "cam", episodes,
                  cameras={"observation.images.top": ("libx264", [clip(e, n) for e, n in
                                                                   enumerate(steps)])})
    meta = landing / "cam" / "meta" / "episodes" / "chunk-000" / "file-000.parquet"
    df = pd.read_parquet(meta)
    fps = json.loads((landing / "cam" / "meta" / "info.json").read_text())["fps"]
    df.loc[1, "videos/observation.images.top/to_timestamp"] -= 1.0 / fps
    df.to_parquet(meta)

    assert _pac_ingest(str(landing), "--data-root", str(data_root)) == 1

    assert sorted(_stored(data_root)) == ["cam#episode_0", "cam#episode_2"]
    note = (landing / QUARANTINE / "cam.reason.txt").read_text()
    assert "cam#episode_1: video: episode 1: camera observation.images.top:" \
        " videos/observation.images.top/chunk-000/file-000.mp4 holds 7 frame(s)" in note
    assert "the episode has 8 rows" in note


def test_truncated_and_missing_videos_reject_their_episodes(tmp_path):
    """Two episodes per mp4: file-000 (episodes 0, 1) intact, file-001 (2, 3) cut in half,
    file-002 (episode 4) deleted."""
    landing, data_root = tmp_path / "landing", tmp_path / "data"
    steps = [6, 7, 8, 6, 5]
    episodes = [make_episode(TASK, steps=n, seed=i) for i, n in enumerate(steps)]
    write_lerobot(landing / "cam", episodes, video_per_file=2,
                  cameras={"observation.images.top": ("libx264", [clip(e, n) for e, n in
                                                                   enumerate(steps)])})
    folder = landing / "cam" / "videos" / "observation.images.top" / "chunk-000"
    cut = folder / "file-001.mp4"
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 2])
    (folder / "file-002.mp4").unlink()

    assert _pac_ingest(str(landing), "--data-root", str(data_root)) == 1

    stored = _stored(data_root)
    assert sorted(stored) == ["cam#episode_0", "cam#episode_1"]
    assert _errors(stored["cam#episode_1"][:, 0], expected(1, 7)).max() < MAE
    note = (landing / QUARANTINE / "cam.reason.txt").read_text()
    for e in (2, 3):
        assert f"cam#episode_{e}: video: episode {e}: camera observation.images.top:" \
            " videos/observation.images.top/chunk-000/file-001.mp4" in note
    assert "cam#episode_4: video: episode 4: camera observation.images.top:" \
        " videos/observation.images.top/chunk-000/file-002.mp4 is missing" in note
    assert (landing / PROCESSED / "cam").is_dir()


def test_corrupt_png_rejects_its_episode(tmp_path):
    import pandas as pd

    landing, data_root = tmp_path / "landing", tmp_path / "data"
    episodes = [make_episode(TASK, steps=5, seed=i) for i in range(2)]
    write_lerobot(landing / "png", episodes, cameras={
        "observation.images.top": ("png", [clip(e, 5, size=(40, 40)) for e in range(2)])})
    path = landing / "png" / "data" / "chunk-000" / "file-000.parquet"
    df = pd.read_parquet(path)
    row = df.index[(df["episode_index"] == 1) & (df["frame_index"] == 3)][0]
    df.at[row, "observation.images.top"] = {"bytes": b"\x89PNG\r\n\x1a\nbroken", "path": "x"}
    df.to_parquet(path)

    assert _pac_ingest(str(landing), "--data-root", str(data_root)) == 1

    assert sorted(_stored(data_root)) == ["png#episode_0"]
    note = (landing / QUARANTINE / "png.reason.txt").read_text()
    assert "png#episode_1: image: episode 1: camera observation.images.top: the image of row 3" \
        " is undecodable" in note


def test_frames_off_their_rows_timestamps_reject_the_episode(tmp_path):
    """An mp4 whose clip 1 dropped 2 frames in its middle: its 8 frames span 10 frame periods,
    meta/episodes gives that whole window, so the count matches the rows, but frame 4 comes
    2/fps after its row's timestamp: beyond 1e-4 s + one frame (docs/rollout_format.md)."""
    landing, data_root = tmp_path / "landing", tmp_path / "data"
    steps = [6, 8, 5]
    episodes = [make_episode(TASK, steps=n, seed=i) for i, n in enumerate(steps)]
    clips = [clip(e, n) for e, n in enumerate(steps)]
    write_lerobot(landing / "cam", episodes,
                  cameras={"observation.images.top": ("libx264", clips)})
    fps = json.loads((landing / "cam" / "meta" / "info.json").read_text())["fps"]
    video = landing / "cam" / "videos" / "observation.images.top" / "chunk-000" / "file-000.mp4"
    video.unlink()
    windows = write_mp4(video, clips, fps, "libx264", skip={1: 2})
    import pandas as pd

    meta = landing / "cam" / "meta" / "episodes" / "chunk-000" / "file-000.parquet"
    df = pd.read_parquet(meta)
    key = "videos/observation.images.top"
    df[f"{key}/from_timestamp"] = [w[0] for w in windows]
    df[f"{key}/to_timestamp"] = [w[1] for w in windows]
    df.to_parquet(meta)

    assert _pac_ingest(str(landing), "--data-root", str(data_root)) == 1

    assert sorted(_stored(data_root)) == ["cam#episode_0", "cam#episode_2"]
    note = (landing / QUARANTINE / "cam.reason.txt").read_text()
    assert "cam#episode_1: video: episode 1: camera observation.images.top:" \
        f" videos/observation.images.top/chunk-000/file-000.mp4: frame 4 is at {6 / fps:g} s of" \
        f" the episode, its row's timestamp is {4 / fps:g} s" in note


def test_unreadable_only_video_quarantines_the_dataset(tmp_path):
    """The one mp4 of the dataset is not a video: every episode is rejected, nothing stored,
    the folder goes to quarantine whole."""
    landing, data_root = tmp_path / "landing", tmp_path / "data"
    episodes = [make_episode(TASK, steps=5, seed=i) for i in range(2)]
    write_lerobot(landing / "cam", episodes, cameras={
        "observation.images.top": ("libx264", [clip(e, 5) for e in range(2)])})
    video = landing / "cam" / "videos" / "observation.images.top" / "chunk-000" / "file-000.mp4"
    video.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)

    assert _pac_ingest(str(landing), "--data-root", str(data_root)) == 1

    assert not (landing / PROCESSED / "cam").exists() and (landing / QUARANTINE / "cam").is_dir()
    note = (landing / QUARANTINE / "cam.reason.txt").read_text()
    for e in range(2):
        assert f"cam#episode_{e}: video: episode {e}: camera observation.images.top:" \
            " videos/observation.images.top/chunk-000/file-000.mp4: undecodable" in note
