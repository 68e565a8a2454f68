"""LeRobotDataset v3.0 folders (written here with pyarrow) -> episodes -> store -> training."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pac.data import EpisodeStore, store_root
from pac.data.store import Episode
from pac.ingest import PROCESSED, QUARANTINE, ingest, read_lerobot

FPS = 20


def sim_episodes(task: str, count: int, steps: int = 16, quality: float = 0.6) -> list[Episode]:
    """Real dm_control episodes of the graded behaviour policy (pac.data.generate)."""
    from pac.data.generate import run_episode
    from pac.envs import make_env

    env = make_env(task, 0, steps)
    return [run_episode(env, task, quality, seed=100 + i) for i in range(count)]


def write_lerobot(
    root: Path,
    episodes: list[Episode],
    task_texts: list[str] | None = None,
    per_file: int = 3,
    version: str = "v3.0",
    frames_edit=None,
    rewards: bool = True,
) -> Path:
    """A LeRobotDataset v3.0 folder: several episodes per data parquet file.

    `task_texts` (default: each episode's task) go to meta/tasks.parquet, indexed by the text
    as lerobot writes it. `frames_edit(episode_index, DataFrame) -> DataFrame` corrupts frames.
    """
    texts = task_texts or [ep.task for ep in episodes]
    tasks = list(dict.fromkeys(texts))
    n_state, n_action = episodes[0].proprio.shape[1], episodes[0].actions.shape[1]
    (root / "meta" / "episodes" / "chunk-000").mkdir(parents=True)
    (root / "data" / "chunk-000").mkdir(parents=True)
    info = {
        "codebase_version": version, "robot_type": "dm_control", "fps": FPS,
        "total_episodes": len(episodes), "total_tasks": len(tasks), "chunks_size": 1000,
        "data_path": "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet",
        "features": {
            "observation.state": {"dtype": "float32", "shape": [n_state], "names": None},
            "action": {"dtype": "float32", "shape": [n_action], "names": None},
            "next.reward": {"dtype": "float32", "shape": [1], "names": None},
            "next.done": {"dtype": "bool", "shape": [1], "names": None},
            **{k: {"dtype": "int64", "shape": [1], "names": None}
               for k in ("episode_index", "frame_index", "index", "task_index")},
            "timestamp": {"dtype": "float32", "shape": [1], "names": None},
        },
    }
    (root / "meta" / "info.json").write_text(json.dumps(info, indent=2))
    pd.DataFrame({"task_index": range(len(tasks))}, index=pd.Index(tasks, name="task")).to_parquet(
        root / "meta" / "tasks.parquet"
    )
    index, rows_meta = 0, []
    for f, first in enumerate(range(0, len(episodes), per_file)):
        frames = []
        for e in range(first, min(first + per_file, len(episodes))):
            ep, steps = episodes[e], len(episodes[e].rewards)
            df = pd.DataFrame({
                "observation.state": list(ep.proprio.astype(np.float32)),
                "action": list(ep.actions.astype(np.float32)),
                "next.reward": ep.rewards.astype(np.float32),
                "next.done": np.arange(steps) == steps - 1,
                "episode_index": e, "frame_index": np.arange(steps),
                "timestamp": (np.arange(steps) / FPS).astype(np.float32),
                "index": np.arange(index, index + steps), "task_index": tasks.index(texts[e]),
            })
            if not rewards:
                df = df.drop(columns=["next.reward"]).assign(
                    **{"next.success": np.arange(steps) == steps - 1 if ep.success else False})
            df = frames_edit(e, df) if frames_edit else df
            frames.append(df)
            rows_meta.append({"episode_index": e, "tasks": [texts[e]], "length": steps,
                              "data/chunk_index": 0, "data/file_index": f,
                              "dataset_from_index": index, "dataset_to_index": index + steps})
            index += steps
        table = pa.Table.from_pandas(pd.concat(frames, ignore_index=True), preserve_index=False)
        if f % 2 == 0:  # lerobot writes fixed-size lists; accept plain lists as well
            for name, n in (("observation.state", n_state), ("action", n_action)):
                col = table.column(name).cast(pa.list_(pa.float32(), n))
                table = table.set_column(table.schema.get_field_index(name), name, col)
        pq.write_table(table, root / "data" / "chunk-000" / f"file-{f:03d}.parquet")
    episodes_file = root / "meta" / "episodes" / "chunk-000" / "file-000.parquet"
    pd.DataFrame(rows_meta).to_parquet(episodes_file)
    return root


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
    assert json.loads(first["meta"])["fps"] == FPS

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
    assert "pm#episode_2: unknown-task: task 'humanoid.fly' is not one of" in note
    assert (landing / PROCESSED / "pm").is_dir()  # its good episodes are committed
    assert len(EpisodeStore(store_root(tmp_path / "data")).episodes) == 2


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


def _edit_info(root: Path, **changes) -> None:
    path = root / "meta" / "info.json"
    path.write_text(json.dumps(json.loads(path.read_text()) | changes))
