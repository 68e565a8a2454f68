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
import pytest
import torch
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


KNOB = """embodiments:
  knob: {state_size: 2, action_size: 1, action_low: [-2.0], action_high: [2.0], fps: 10}
tasks:
  turn: {instruction: turn the knob, embodiment: knob}
model: {num_proprio: 2, num_actions: 1, vocab_size: 96, d_z: 32, num_blocks: 1, widening: 1,
        num_heads: 2, d_i: 16, num_latents: 4, num_value_bins: 201}
loss: {variant: bc_q, alpha: 1.0, beta: 1.0, gamma: 0.9, value_min: 0.0, value_max: 10.0}
data:
  tokenizer_vocab: 96
  trajectory_length: 4
  groups: [{name: lab, tasks: [turn], source: real}]
"""


def test_a_sparse_success_reward_on_the_final_frame_reaches_q(tmp_path, declared_tasks):
    """A LeRobot episode of three frames whose only reward is `next.reward` = 1 on the final
    frame (with `next.done`, no terminal flag) -> `pac ingest` -> the sampler -> eq. 11's Q term
    (bc_q, target network refreshed every 20 updates): Q(s2, a2) -> r = 1, Q(s1, a1) -> gamma r,
    Q(s0, a0) -> gamma^2 r, the exact fixed point of the deterministic episode, within the
    support's resolution (201 bins on [0, 10], the
    rewards' geometric bound: 0.05). Fails when the final reward is stored as a
    truncation (its step then bootstraps from nothing and is never a loss position), when the
    sampler drops the final step, or when gamma is lost on the way."""
    import copy

    from pac.cli import main
    from pac.data import TrajectorySampler
    from pac.losses import compute_loss
    from pac.model import PerceiverActorCritic
    from pac.model.distributions import expected_value
    from pac.tasks import from_unit

    params = write_params(tmp_path, KNOB, "knob.yaml")
    cfg = load_config(params)
    episode = Episode(task="turn", proprio=np.array([[0, 0], [0.5, 0], [1, 0]], np.float32),
                      actions=np.full((3, 1), 0.8, np.float32),  # 0.4 in the [-1, 1] bins
                      rewards=np.array([0, 0, 1], np.float32), discounts=np.ones(3, np.float32))
    write_lerobot(tmp_path / "landing" / "knob", [episode], ["turn the knob"], fps=10)
    assert main(["ingest", str(tmp_path / "landing"), "--params", str(params), "--data-root",
                 str(tmp_path / "data"), "--group", "lab", "--source", "real", "--no-dvc",
                 "--no-track"]) == 0
    store = EpisodeStore(store_root(tmp_path / "data"))
    (shard,) = store.shards
    np.testing.assert_array_equal(shard.discounts, [1, 1, 0])  # terminal, not a time limit
    tok = TaskTokenizer.train(tokenizer_path(tmp_path / "data"), 96,
                              tasks=instruction_tasks(cfg))
    sampler = TrajectorySampler(cfg, store, tok)

    torch.manual_seed(0)
    model = PerceiverActorCritic(cfg.model)
    target = copy.deepcopy(model).requires_grad_(False)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    for step in range(160):
        if step % 20 == 0:
            target.load_state_dict(model.state_dict())
        out = compute_loss(model, target, sampler.batch(step, 8), cfg.loss, step, g)
        opt.zero_grad()
        out.total.backward()
        opt.step()
    _, _, _, offset = sampler.sample_indices(0, 8)
    b = int(np.flatnonzero(offset == 0)[0])  # a window that starts at the first frame
    batch = sampler.batch(0, 8)
    assert from_unit(batch.actions[b, :3, 0].numpy(), [-2.0], [2.0]) == pytest.approx([0.8] * 3)
    with torch.no_grad():
        z = model.encode(batch.observation(slice(0, 3)))
        q_logits = model.q_logits(z, batch.actions[:, :3].reshape(-1, 1, 1))[:, 0]
        q = expected_value(q_logits, 0.0, 10.0).reshape(8, 3)[b]
    np.testing.assert_allclose(q.numpy(), [0.81, 0.9, 1.0], atol=0.05)
