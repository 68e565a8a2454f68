"""A robot lab's own data, end to end, with nothing but a params file (README, "Train on your
robot's LeRobot dataset").

The real lerobot package (0.4.4, its own environment: benchmarks/lerobot_env.sh) writes a
dataset of a robot that is no built-in task: a 14-value state, 7 joint targets in radians
(outside [-1, 1]), one camera as an AV1 mp4 stream, three free-text instructions, a sparse
success reward on the final frame (benchmarks/lerobot_write.py). Then, as a user does it in a
clone of the project:

1. ``pac ingest LANDING --params my_robot.yaml`` stores it: values equal to what lerobot was
   given, camera frames within the codec's tolerance (mean absolute error < 3 of 255 per frame);
2. ``python flows/pac_flow.py run --params-file my_robot.yaml`` trains the tiny model on state,
   camera and instruction, evaluates it offline on held-out episodes (no simulator) and hands
   the policy over (registered, with its model card);
3. the handed-over policy, served, takes state + camera image + instruction and returns actions
   in the robot's own units.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from flow_helpers import copy_project, flow_env, run_flow

REPO = Path(__file__).resolve().parents[1]
SIDE = REPO / "benchmarks" / ".lerobot"
needs_lerobot = pytest.mark.skipif(
    not (SIDE / "lerobot").is_dir(),
    reason="the lerobot side environment is absent: run bash benchmarks/lerobot_env.sh")
MAE = 3.0  # of 255, per frame: AV1 at lerobot's defaults

sys.path.insert(0, str(REPO / "benchmarks"))
try:
    from lerobot_write import ACTION, ACTION_RANGE, FPS, INSTRUCTIONS, STATE, STEPS, SUCCESS
finally:
    sys.path.remove(str(REPO / "benchmarks"))

TASKS = {"pick up the red cube": "pick_red", "open the top drawer": "open_drawer",
         "push the blue block left": "push_blue"}
#: what the lab writes: its robot, its tasks, the tiny model with one camera, a tiny budget
PARAMS = f"""extends: params/default.yaml
embodiments:
  arm14:
    state_size: {STATE}
    action_size: {ACTION}
    action_low: [{-ACTION_RANGE}]
    action_high: [{ACTION_RANGE}]
    fps: {FPS}
    cameras: [front]
tasks:
{"".join(f"  {name}: {{instruction: {text}, embodiment: arm14}}{chr(10)}"
         for text, name in TASKS.items())}
model: {{num_proprio: {STATE}, num_actions: {ACTION}, num_images: 1, vocab_size: 96}}
data:
  tokenizer_vocab: 96
  trajectory_length: 3
  groups: [{{name: robot, tasks: [{", ".join(TASKS.values())}], source: real}}]
train: {{steps: 12, global_batch: 4, log_every: 4, checkpoint_every: 6, warmup_steps: 2,
        precision: fp32}}
loss: {{target_update_period: 6, num_action_samples: 2}}
eval: {{offline_holdout: 3}}
rlft: {{rounds: 0}}
"""


@pytest.fixture(scope="module")
def robot_repo(tmp_path_factory):
    """A clone of the project with the lerobot-written dataset ingested under my_robot.yaml."""
    if not (SIDE / "lerobot").is_dir():
        pytest.skip("the lerobot side environment is absent: run bash benchmarks/lerobot_env.sh")
    tmp = tmp_path_factory.mktemp("robot")
    env = os.environ | {"PYTHONPATH": f"{SIDE}{os.pathsep}{REPO}"}
    subprocess.run([sys.executable, str(REPO / "benchmarks" / "lerobot_write.py"),
                    str(tmp / "written")], check=True, env=env, cwd=REPO,
                   capture_output=True, timeout=300)
    repo = tmp / "clone"
    repo.mkdir()
    copy_project(repo)
    (repo / "my_robot.yaml").write_text(PARAMS)
    landing = tmp / "landing"
    landing.mkdir()
    (tmp / "written" / "robot_arm").rename(landing / "robot_arm")
    ingest = subprocess.run(
        [sys.executable, "-m", "pac.cli", "ingest", str(landing), "--params", "my_robot.yaml",
         "--group", "robot", "--source", "real", "--no-dvc", "--no-track"],
        cwd=repo, env=flow_env(repo), capture_output=True, text=True, timeout=300)
    assert ingest.returncode == 0, ingest.stdout + ingest.stderr
    return repo, np.load(tmp / "written" / "truth.npz")


@needs_lerobot
def test_pac_ingest_stores_what_lerobot_wrote(robot_repo):
    from pac.data import EpisodeStore, store_root

    repo, truth = robot_repo
    store = EpisodeStore(store_root(repo / "data"), verify=True)
    assert len(store.episodes) == len(STEPS)
    for e, steps in enumerate(STEPS):
        row = store.episodes[store.episodes["origin"] == f"robot_arm#episode_{e}"].iloc[0]
        shard = next(s for s in store.shards if s.key == row["shard"])
        part = slice(row["start"], row["start"] + row["length"])
        assert row["task"] == TASKS[INSTRUCTIONS[e % 3]] and row["length"] == steps
        assert bool(row["success"]) == SUCCESS[e]
        np.testing.assert_array_equal(shard.proprio[part], truth[f"state_{e}"])
        np.testing.assert_array_equal(shard.actions[part], truth[f"action_{e}"])
        assert np.abs(truth[f"action_{e}"]).max() > 1.0  # physical units, not [-1, 1]
        np.testing.assert_array_equal(shard.rewards[part], truth[f"reward_{e}"])
        # docs/rollout_format.md: next.done with the episode's only nonzero reward on its final
        # frame is a terminal success; an episode without reward ends by its time limit
        want = np.ones(steps, np.float32)
        want[-1] = 0.0 if SUCCESS[e] else 1.0
        np.testing.assert_array_equal(shard.discounts[part], want)
        images = np.asarray(shard.images[part])
        assert images.shape == (steps, 1, 80, 80, 3)
        errors = np.abs(images[:, 0].astype(np.float64) - truth[f"frames_{e}"]).mean(
            axis=(1, 2, 3))
        assert errors.max() < MAE, (e, errors)


@needs_lerobot
def test_the_flow_trains_evaluates_offline_and_serves_the_robot(robot_repo):
    repo, truth = robot_repo
    run = run_flow(repo, "--no-pylint", "run", "--params-file", "my_robot.yaml")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]

    from pac.config import load_config
    from pac.evaluation.rollout import PolicyServer
    from pac.tracking import client, experiment_id

    # the offline evaluation of every task on its held-out episodes (1 in 3: episodes 2, 5, 8)
    metrics = json.loads(next((repo / "runs").rglob("offline/metrics.json")).read_text())
    assert metrics["holdout_every"] == 3
    assert sorted(metrics["tasks"]) == sorted(TASKS.values())
    for task in TASKS.values():
        assert metrics["tasks"][task]["episodes"] == 1
        assert np.isfinite(metrics["tasks"][task]["log_lik"])

    # handed over: the registered champion, its card names the offline evaluation
    cfg = load_config(repo / "my_robot.yaml", [
        f"tracking.uri=sqlite:///{repo}/mlruns/mlflow.db",
        f"tracking.artifact_dir={repo}/mlruns/artifacts"])
    mlc = client(cfg)
    version = mlc.get_model_version_by_alias(cfg.tracking.registered_model, "champion")
    card = version.description
    assert "evaluated offline on (no simulator) | open_drawer, pick_red, push_blue" in card
    # the data version names the robot's store, not the default data's DVC hashes
    assert "episodes_fingerprint" in card and "data/episodes/expert" not in card
    offline_runs = [r for r in mlc.search_runs([experiment_id(mlc, cfg)])
                    if "eval.offline.tasks" in r.data.params]
    assert len(offline_runs) == 1  # the offline evaluation, tracked

    # the README's recipe, last line: the held-out episodes again, with the params file alone
    again = subprocess.run([sys.executable, "-m", "pac.cli", "eval", "--offline", "--params",
                            "my_robot.yaml"], cwd=repo, env=flow_env(repo), capture_output=True,
                           text=True, timeout=300)
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    for task in TASKS.values():
        assert f"| {task} | 1 |" in again.stdout  # one held-out episode each, as in the flow

    # the served policy: state + camera image + instruction -> actions in the robot's units
    policy = next((repo / "runs").rglob("policy/tasks.json")).parent
    server = PolicyServer.load(policy)
    assert server.cfg.model.num_images == 1
    image = np.round(truth["frames_0"][0]).astype(np.uint8)
    for task in TASKS.values():
        action = server.act(truth["state_0"][0], task, image[None])
        assert action.shape == (ACTION,)
        assert np.all(np.abs(action) <= ACTION_RANGE + 1e-5)
        # argmax decoding: bin k's centre -1 + 2k / (N_B - 1), mapped affinely to the range
        k = (action + ACTION_RANGE) / (2 * ACTION_RANGE) * (cfg.model.num_action_bins - 1)
        np.testing.assert_allclose(k, np.round(k), atol=2e-4)
    # the camera is an input: a different image changes the policy's distribution
    dark = np.zeros_like(image)
    logits = []
    for im in (image, dark):
        obs = server.observation(truth["state_0"][0], "pick_red", im[None])
        with torch.inference_mode():
            logits.append(server.model.policy_logits(server.model.encode(obs)).numpy())
    assert not np.allclose(*logits)
