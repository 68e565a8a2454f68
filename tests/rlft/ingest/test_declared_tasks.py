"""A lab's own data through `pac ingest` -> training -> serving with nothing but a params file.

One params file declares a robot that is no dm_control task (14-value state, 7 actions in
radians and a gripper opening in metres) and dm_control's reacher at its native 50 Hz. The
LeRobot datasets name their tasks by instruction ("pick up the red cube") or as dm_control
does ("reacher.easy", told apart from the built-in 25 Hz task by the dataset's fps). `pac ingest`
runs as its own process: the declarations reach it through --params alone.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
from embodiment_helpers import DECLARATIONS, HIGH, LOW, write_params
from ingest_corpus import write_lerobot
from test_lerobot import sim_episodes

from pac.config import REPO_ROOT, load_config
from pac.data import EpisodeStore, TaskTokenizer, store_root, tokenizer_path
from pac.data.store import Episode
from pac.data.tokenizer import instruction_tasks

PARAMS = DECLARATIONS + """data:
  tokenizer_vocab: 96
  trajectory_length: 3
  groups: [{name: lab, tasks: [pick_red, reacher.easy_50hz], source: real}]
"""


def arm_episodes(count: int, steps: int = 12) -> list[Episode]:
    """Arm episodes in physical units; a sparse success reward on the final frame of some."""
    rng = np.random.default_rng(7)
    out = []
    for i in range(count):
        rewards = np.zeros(steps, np.float32)
        rewards[-1] = float(i % 2 == 0)
        out.append(Episode(task="pick_red", proprio=rng.normal(size=(steps, 14)).astype(np.float32),
                           actions=rng.uniform(LOW, HIGH, (steps, 7)).astype(np.float32),
                           rewards=rewards, discounts=np.ones(steps, np.float32)))
    return out


def test_declared_robot_and_50hz_reacher_ingest_train_and_serve(
        tmp_path, monkeypatch, declared_tasks):
    from pac.evaluation.rollout import PolicyServer
    from pac.train.trainer import train

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    params = write_params(tmp_path, PARAMS, "my_robot.yaml")
    cfg = load_config(params, [
        f"data.root={tmp_path / 'data'}", "train.steps=3", "train.global_batch=4",
        "train.log_every=1", "loss.num_action_samples=2", f"train.out_dir={tmp_path / 'run'}",
        f"tracking.uri=sqlite:///{tmp_path / 'mlruns.db'}",
        f"tracking.artifact_dir={tmp_path / 'artifacts'}", "train.precision=fp32"])
    landing = tmp_path / "landing"
    arm = arm_episodes(4)
    wild = arm_episodes(1)[0]
    wild.actions[3, 6], wild.actions[5, 6], wild.actions[2, 0] = 0.1, 0.2, -4.0  # 2 gripper, 1 j1
    write_lerobot(landing / "arm", [*arm, wild], ["pick up the red cube"] * 5)  # fps 30
    reacher = sim_episodes("reacher.easy_50hz", 2, steps=16)  # dm_control at 20 ms a step
    write_lerobot(landing / "reacher_50hz", reacher, ["reacher.easy"] * 2)  # fps 50

    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    run = subprocess.run(
        [sys.executable, "-m", "pac.cli", "ingest", str(landing), "--params", str(params),
         "--data-root", str(tmp_path / "data"), "--group", "lab", "--source", "real",
         "--no-dvc", "--no-track"], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert run.returncode == 1, run.stderr  # one episode rejected, the rest stored
    assert run.stderr.strip().splitlines() == [
        "rejected arm#episode_4: action-range: episode 4: 3 action value(s) outside the task's"
        " range (per dimension j1: 1, gripper: 2), first actions[2, 0] = -4 outside [-3.1, 3.1]"
        " (row 2)"]

    eps = EpisodeStore(store_root(tmp_path / "data"), verify=True).episodes
    eps = eps.sort_values("origin")
    assert list(eps["task"]) == ["pick_red"] * 4 + ["reacher.easy_50hz"] * 2
    assert [json.loads(m)["fps"] for m in eps["meta"]] == [30] * 4 + [50] * 2
    # the declared task's success rule: reward >= 1 on the final step (the sparse label)
    assert list(eps["success"])[:4] == [True, False, True, False]
    shard = next(s for s in EpisodeStore(store_root(tmp_path / "data")).shards
                 if s.task == "pick_red")
    first = eps[eps["shard"] == shard.key].iloc[0]
    stored = shard.actions[first["start"]: first["start"] + 12]
    np.testing.assert_array_equal(stored, arm[int(first["origin"].split("_")[-1])].actions)

    TaskTokenizer.train(tokenizer_path(tmp_path / "data"), 96, tasks=instruction_tasks(cfg))
    result = train(cfg)
    assert np.isfinite(result.metrics["loss/total"])

    table = json.loads((result.policy_dir / "tasks.json").read_text())
    assert table["pick_red"] == {"instruction": "pick up the red cube", "action_low": LOW,
                                 "action_high": HIGH}
    server = PolicyServer.load(result.policy_dir)
    rng = np.random.default_rng(3)
    low, high = np.array(LOW, np.float32), np.array(HIGH, np.float32)  # the served dtype
    for _ in range(3):
        action = server.act(rng.normal(size=14).astype(np.float32), "pick_red")
        assert action.shape == (7,) and np.all(action >= low) and np.all(action <= high)
        # argmax decoding: bin k's centre -1 + 2k / (N_B - 1), mapped affinely to [low, high]
        k = (action - low) / (high - low) * (cfg.model.num_action_bins - 1)
        np.testing.assert_allclose(k, np.round(k), atol=2e-4)
    served = server.act(reacher[0].proprio[0], "reacher.easy_50hz")
    assert served.shape == (2,) and np.all(np.abs(served) <= 1.0)

    # serving reads the recorded ranges, not the params: a checkpoint whose table says the
    # gripper spans [10, 20] returns gripper commands there
    table["pick_red"]["action_low"][6], table["pick_red"]["action_high"][6] = 10.0, 20.0
    (result.policy_dir / "tasks.json").write_text(json.dumps(table))
    moved = PolicyServer.load(result.policy_dir).act(np.zeros(14, np.float32), "pick_red")
    assert 10.0 <= moved[6] <= 20.0 and np.all(moved[:6] >= low[:6])


def test_the_refused_50fps_reacher_is_stored_once_its_rate_is_declared(tmp_path, declared_tasks):
    """The recording of test_lerobot_fps_must_be_the_task_control_rate (dm_control's reacher at
    its own 20 ms, labelled reacher.easy) lands under the declared 50 Hz task; two declared
    tasks that the label and rate cannot tell apart refuse the episode."""
    from ingest_corpus import make_episode

    from pac.rlft.ingest import ingest

    reacher = [make_episode("reacher.easy", steps=40, seed=i) for i in range(2)]
    load_config()  # the built-ins only
    write_lerobot(tmp_path / "before" / "reacher_50fps", reacher, fps=50)
    before = ingest(tmp_path / "before", tmp_path / "data")
    assert not before.accepted and before.rejected["reacher_50fps#episode_0"].startswith(
        "fps: episode 0: fps 50 is not reacher.easy's control rate 25 fps")

    params = write_params(tmp_path, "tasks:\n  reacher.easy_50hz:\n    instruction: reacher.easy\n"
                          "    simulator: {dm_control: reacher.easy, action_repeat: 1}\n")
    load_config(params)
    write_lerobot(tmp_path / "after" / "reacher_50fps", reacher, fps=50)
    after = ingest(tmp_path / "after", tmp_path / "data")
    assert sorted(after.accepted) == ["reacher_50fps#episode_0", "reacher_50fps#episode_1"]
    stored = EpisodeStore(store_root(tmp_path / "data")).episodes
    assert set(stored["task"]) == {"reacher.easy_50hz"}

    params.write_text(params.read_text() + "  reacher.easy_50hz_copy:\n"
                      "    instruction: reacher.easy\n"
                      "    simulator: {dm_control: reacher.hard, action_repeat: 1}\n")
    load_config(params)
    write_lerobot(tmp_path / "twice" / "reacher_50fps", reacher[:1], fps=50)
    twice = ingest(tmp_path / "twice", tmp_path / "data")
    assert twice.rejected["reacher_50fps#episode_0"] == (
        "task: episode 0: task 'reacher.easy' at 50 fps matches the tasks reacher.easy_50hz,"
        " reacher.easy_50hz_copy: give them distinct instructions in params")
