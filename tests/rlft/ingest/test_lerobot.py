"""LeRobotDataset v3.0 folders (written here with pyarrow) -> episodes -> store -> training."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from ingest_corpus import make_episode, write_lerobot

from pac.data import EpisodeStore, store_root
from pac.data.store import Episode
from pac.rlft.ingest import PROCESSED, QUARANTINE, ingest, read_lerobot


def sim_episodes(task: str, count: int, steps: int = 16, quality: float = 0.6) -> list[Episode]:
    """Real dm_control episodes of the graded behaviour policy (pac.data.generate)."""
    from pac.data.generate import run_episode
    from pac.envs import make_env

    env = make_env(task, 0, steps)
    return [run_episode(env, task, quality, seed=100 + i) for i in range(count)]


def test_lerobot_v3_dataset_ingests_and_trains(tmp_path, monkeypatch):
    from pac.config import load_config
    from pac.data import TaskTokenizer, tokenizer_path
    from pac.train.trainer import train

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    episodes = sim_episodes("reacher.easy", 3) + sim_episodes("reacher.hard", 4)
    landing, data_root = tmp_path / "landing", tmp_path / "data"
    write_lerobot(landing / "arm_v3", episodes, per_file=3)  # 3 data files: 3 + 3 + 1 episodes
    assert len(list((landing / "arm_v3" / "data").rglob("*.parquet"))) == 3

    report = ingest(landing, data_root, group="lerobot", source="real")

    assert sorted(report.accepted) == [f"arm_v3#episode_{i}" for i in range(7)]
    assert (landing / PROCESSED / "arm_v3").is_dir() and not (landing / QUARANTINE).exists()
    eps = EpisodeStore(store_root(data_root), verify=True).episodes.sort_values("origin")
    assert list(eps["task"]) == ["reacher.easy"] * 3 + ["reacher.hard"] * 4
    assert (eps["source"] == "real").all() and list(eps["length"]) == [16] * 7
    shard = EpisodeStore(store_root(data_root)).shards[0]
    first = eps[eps["shard"] == shard.key].iloc[0]
    np.testing.assert_allclose(  # observation.state -> proprio, exactly
        shard.proprio[first["start"]: first["start"] + 16],
        episodes[int(first["origin"].split("_")[-1])].proprio, rtol=0, atol=0)
    assert json.loads(first["meta"])["fps"] == pytest.approx(25.0)  # 1 / (20 ms x 2)

    TaskTokenizer.train(tokenizer_path(data_root), 64, "bpe")
    cfg = load_config(overrides=[
        f"data.root={data_root}",
        "data.groups=[{name: lerobot, tasks: [reacher.easy, reacher.hard], source: real}]",
        "data.trajectory_length=3", "train.steps=3", "train.global_batch=4", "train.log_every=1",
        "loss.num_action_samples=2", f"train.out_dir={tmp_path / 'run'}",
        f"tracking.uri=sqlite:///{tmp_path / 'mlruns.db'}",
        f"tracking.artifact_dir={tmp_path / 'artifacts'}",
    ])
    result = train(cfg)
    print(f"\ntrained 3 updates on the ingested LeRobot data: {result.metrics}")
    assert (result.policy_dir / "model.safetensors").is_file()
    assert np.isfinite(result.metrics["loss/total"])


def test_lerobot_bad_episodes_rejected_good_ones_kept(tmp_path):
    episodes = sim_episodes("point_mass.easy", 6, steps=10)
    texts = ["point_mass.easy", "point_mass.easy", "humanoid.fly", "point_mass.easy",
             "point_mass.easy", "point_mass.easy"]

    def corrupt(e: int, df: pd.DataFrame) -> pd.DataFrame:
        if e == 1:
            df.at[4, "observation.state"] = np.array([0, np.nan, 0, 0], np.float32)
        if e == 3:
            df = df.drop(index=5)  # a missing frame
        if e == 4:
            df.at[2, "action"] = np.array([1.7, 0.0], np.float32)
        return df

    landing = tmp_path / "landing"
    write_lerobot(landing / "pm", episodes, texts, per_file=4, frames_edit=corrupt)
    results = dict(read_lerobot(landing / "pm"))
    codes = {k: v.code for k, v in results.items() if isinstance(v, Exception)}
    assert codes == {"pm#episode_1": "non-finite", "pm#episode_2": "unknown-task",
                     "pm#episode_3": "frames", "pm#episode_4": "action-range"}

    report = ingest(landing, tmp_path / "data")
    assert sorted(report.accepted) == ["pm#episode_0", "pm#episode_5"]
    note = (landing / QUARANTINE / "pm.reason.txt").read_text()
    assert "pm#episode_2: unknown-task: episode 2: task 'humanoid.fly' is not one of" in note
    assert "pm#episode_1: non-finite: episode 1: proprio has 1 NaN/inf value(s), first at row 4,"\
        " column 1" in note
    assert (landing / PROCESSED / "pm").is_dir()  # its good episodes are committed
    # the evidence of the bad episodes stays in quarantine/: a byte-exact copy of the dataset
    assert _tree(landing / QUARANTINE / "pm") == _tree(landing / PROCESSED / "pm")
    assert len(EpisodeStore(store_root(tmp_path / "data")).episodes) == 2


def test_lerobot_fps_must_be_the_task_control_rate(tmp_path):
    """A reacher recording at 50 fps (dm_control's own 20 ms) is not `reacher.easy` (action
    repeat 2: 40 ms, 25 fps): refused with the expected rate and the params declaration that
    takes it (tests/rlft/ingest/test_declared_tasks.py); lerobot's integer 17 stands for
    point_mass.easy's 16.67 fps (60 ms)."""
    landing = tmp_path / "landing"
    reacher = [make_episode("reacher.easy", steps=40, seed=i) for i in range(2)]
    write_lerobot(landing / "reacher_50fps", reacher, fps=50)
    write_lerobot(landing / "reacher_25fps", reacher[:1], fps=25)
    write_lerobot(landing / "pm_int_fps", [make_episode(steps=8, seed=5)], fps=17)
    write_lerobot(landing / "pm_16fps", [make_episode(steps=8, seed=6)], fps=16)
    report = ingest(landing, tmp_path / "data")
    assert sorted(report.accepted) == ["pm_int_fps#episode_0", "reacher_25fps#episode_0"]
    assert report.rejected["reacher_50fps#episode_1"] == (
        "fps: episode 1: fps 50 is not reacher.easy's control rate 25 fps (dm_control timestep"
        " 20 ms x action repeat 2 = 40 ms per action); resample the recording to 25 fps, or"
        " declare a task at 50 fps in params (tasks: {<name>: {instruction: reacher.easy,"
        " simulator: {dm_control: reacher.easy, action_repeat: 1}}}; docs/data.md)")
    assert report.rejected["pm_16fps#episode_0"].startswith(
        "fps: episode 0: fps 16 is not point_mass.easy's control rate 16.6667 fps (or 17 as an"
        " integer) (dm_control timestep 20 ms x action repeat 3 = 60 ms per action)")
    assert (landing / QUARANTINE / "reacher_50fps").is_dir()


def test_lerobot_success_label_without_rewards(tmp_path):
    episodes = sim_episodes("point_mass.easy", 2, steps=10)
    episodes[0].success = True
    write_lerobot(tmp_path / "landing" / "labels", episodes, rewards=False)
    report = ingest(tmp_path / "landing", tmp_path / "data")
    eps = EpisodeStore(store_root(tmp_path / "data")).episodes.sort_values("origin")
    assert report.episodes_added == 2 and list(eps["success"]) == [True, False]


@pytest.mark.parametrize(
    ("break_it", "code"),
    [
        (lambda r: _edit_info(r, codebase_version="v2.1"), "lerobot-version"),
        (lambda r: _edit_info(r, fps=0), "lerobot-meta"),
        (lambda r: (r / "meta" / "info.json").write_text("{not json"), "lerobot-meta"),
        (lambda r: (r / "meta" / "tasks.parquet").unlink(), "lerobot-layout"),
        (lambda r: [p.unlink() for p in (r / "data").rglob("*.parquet")], "lerobot-layout"),
        (lambda r: (r / "data" / "chunk-000" / "file-000.parquet").write_bytes(b"PAR1 cut"),
         "lerobot-data"),
        (lambda r: _edit_info(r, features={"action": {"dtype": "float32", "shape": [2]}}),
         "missing"),
    ],
    ids=["v2.1", "fps", "info-json", "no-tasks", "no-data", "truncated-parquet", "no-state"],
)
def test_lerobot_dataset_level_problems_quarantine_the_folder(tmp_path, break_it, code):
    landing = tmp_path / "landing"
    root = write_lerobot(landing / "ds", sim_episodes("point_mass.easy", 2, steps=6))
    break_it(root)
    report = ingest(landing, tmp_path / "data")
    assert report.rejected["ds"].startswith(f"{code}: ")
    assert (landing / QUARANTINE / "ds").is_dir()
    assert (landing / QUARANTINE / "ds.reason.txt").read_text().startswith(f"ds: {code}: ")
    assert not EpisodeStore(store_root(tmp_path / "data")).shards


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _edit_info(root: Path, **changes) -> None:
    path = root / "meta" / "info.json"
    path.write_text(json.dumps(json.loads(path.read_text()) | changes))


def test_done_without_rewards_is_a_time_limit_and_terminated_a_terminal_state():
    """LeRobot's next.done closes every episode: alone (no rewards to tell a sparse success) it
    is a truncation (the last step keeps discount 1); next.terminated gives discount 0 exactly
    where it is set. The whole rule: test_ingest_deliveries.py::END_CASES."""
    import numpy as np

    from pac.rlft.ingest.lerobot import discounts_from_done

    done = np.array([False, False, True])
    assert discounts_from_done(done).tolist() == [1.0, 1.0, 1.0]
    assert discounts_from_done(done, np.array([0, 0, 1])).tolist() == [1.0, 1.0, 0.0]
    assert discounts_from_done(None) is None
