"""Flow-level fault tolerance: SIGKILL the whole flow (runtime and task) at a random point
inside `pretrain`, then `python flows/pac_flow.py resume`.

The resumed `pretrain` must continue from the newest complete checkpoint of the killed attempt
(not from update 0), and its policy must be bit-identical (torch.equal) to an uninterrupted
`train()` with the same params: the flow's `pretrain` is `train(cfg, resume=True)` on the flow
run's own train.out_dir, and docs/faults_and_resume.md ("Exact resume") promises bit-identity
under the same thread count, world size, precision and device (the reference matches the
checkpoint's recorded thread count). MLflow: one parent run and one `pretrain-tiny` run, both
FINISHED (the training run of the killed attempt is continued by id), and no run is left
RUNNING. params/default.yaml is edited between the kill and the resume: the resumed steps use
`start`'s settings.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from flow_helpers import TINY_FLOW as SETTINGS
from flow_helpers import (
    copy_project,
    flow_env,
    kill_flow_when,
    metaflow_client,
    run_flow,
    start_flow,
    store_runs,
)
from safetensors.torch import load_file


@pytest.mark.slow
def test_sigkill_inside_pretrain_then_resume_equals_an_uninterrupted_run(tmp_path):
    from pac.config import load_config
    from pac.train import train

    repo = tmp_path / "clone"
    repo.mkdir()
    copy_project(repo)
    runs = repo / "runs" / "flow"
    # the random point: just after one of the first checkpoints, before the next one
    after = random.choice([5, 10])
    delay = random.uniform(0.0, 0.05)
    print(f"\nkilling the flow {delay:.3f} s after checkpoint {after}")
    log = tmp_path / "run.log"
    proc = start_flow(repo, log, "run", "--set", ";".join(SETTINGS))
    manifest = f"*/pretrain/checkpoints/step_{after:08d}/manifest.json"
    kill_flow_when(proc, log, lambda: any(runs.glob(manifest)), delay=delay)
    train_dir = next(runs.iterdir()) / "pretrain"
    assert not (train_dir / "policy").exists(), "pretraining ended before the kill"

    # someone edits the params between the kill and the resume: the resumed steps must run with
    # the values `start` validated (its `config` artefact), so the policy below stays
    # bit-identical to the reference trained with the original file
    params = repo / "params" / "default.yaml"
    edited = yaml.safe_load(params.read_text())
    assert (edited["loss"]["alpha"], edited["train"]["lr_peak"], edited["eval"]["decode"]) == (
        0.75, 1.0e-3, "argmax")
    edited["loss"]["alpha"], edited["train"]["lr_peak"], edited["eval"]["decode"] = (
        0.5, 5.0e-4, "sample")
    params.write_text(yaml.safe_dump(edited, sort_keys=False))

    resumed = run_flow(repo, "resume")
    assert resumed.returncode == 0, (resumed.stdout + resumed.stderr)[-5000:]
    got = metaflow_client(repo, (
        "resumed, killed = list(Flow('PACFlow').runs())[:2]\n"
        "print(json.dumps({'ok': resumed.successful, 'origin': resumed.origin_pathspec,"
        " 'killed': killed.id, 'policy': resumed.data.policy_dir,"
        " 'mlflow': resumed.data.mlflow_run_id, 'pretrain': resumed.data.pretrain_run_id,"
        " 'evals': resumed.data.eval_run_ids}))\n"
    ))
    assert got["ok"] and got["origin"] == f"PACFlow/{got['killed']}"
    assert got["policy"] == f"runs/flow/{got['killed']}/pretrain/policy"  # the killed run's dir

    # MLflow: the killed attempt's training run was continued, nothing duplicated or RUNNING
    every = store_runs(repo)
    assert {r.info.status for r in every} == {"FINISHED"}, [
        (r.info.run_name, r.info.status) for r in every]
    pretrain = [r for r in every if r.info.run_name == "pretrain-tiny"]
    assert [r.info.run_id for r in pretrain] == [got["pretrain"]]
    assert pretrain[0].data.tags["mlflow.parentRunId"] == got["mlflow"]
    start = int(pretrain[0].data.tags["pac.resumed_from_update"])
    assert after <= start < 20  # continued from the killed attempt's newest checkpoint
    assert [r.data.tags.get("pac_role") for r in every].count("flow") == 1
    by_id = {r.info.run_id: r for r in every}
    logged = pretrain[0].data.params
    assert (logged["loss.alpha"], logged["train.lr_peak"]) == ("0.75", "0.001")  # not the edit
    assert [by_id[r].data.params["eval.decode"] for r in got["evals"]] == ["argmax"]

    # the reference: an uninterrupted train() with the same params and thread count
    env = train_dir / "checkpoints" / "step_00000020" / "environment.json"
    threads = json.loads(env.read_text())["num_threads"]
    ref_cfg = load_config(overrides=[
        *SETTINGS, f"train.out_dir={tmp_path / 'reference'}", f"train.threads={threads}",
        f"tracking.uri=sqlite:///{tmp_path / 'ref.db'}",
        f"tracking.artifact_dir={tmp_path / 'ref-artifacts'}"])
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        ref = train(ref_cfg, data_root=repo / "data")
    finally:
        torch.set_num_threads(before)
    expected = load_file(str(ref.policy_dir / "model.safetensors"))
    final = load_file(str(repo / got["policy"] / "model.safetensors"))
    assert expected.keys() == final.keys()
    diff = max((expected[k] - final[k]).abs().max().item() for k in expected)
    print(f"resumed from update {start}; max |theta_resumed - theta_uninterrupted| = {diff}")
    assert all(torch.equal(expected[k], final[k]) for k in expected)


@pytest.mark.slow
def test_rlft_round_killed_after_ingest_neither_collects_nor_ingests_again(tmp_path):
    """SIGKILL `pac rlft` once its round has ingested its rollouts (during the fine-tuning),
    then resume: the robot runs no episode, nothing is ingested a second time, the round's
    MLflow run is continued and no run is left RUNNING."""
    from dataclasses import dataclass

    from pac.checkpoint import save_inference_checkpoint
    from pac.config import load_config
    from pac.data import EpisodeStore, TaskTokenizer, store_root, tokenizer_path
    from pac.data.generate import generate_group
    from pac.model import PerceiverActorCritic
    from pac.rlft.ingest import PROCESSED
    from pac.rlft.robot import SimRobot
    from pac.rlft.rounds import STAGES_FILE, STATE_FILE, rlft, round_dir
    from pac.tracking import client, experiment_id

    @dataclass
    class CountingRobot(SimRobot):
        """dm_control's robot that counts the episodes it is asked for."""

        episodes: int = 0

        def run_episode(self, task, act, seed):
            self.episodes += 1
            return super().run_episode(task, act, seed)

    data, out = tmp_path / "data", tmp_path / "rlft"
    overrides = [
        f"data.root={data}", "data.episode_steps=20",
        "data.groups=[{name: expert, tasks: [point_mass.easy], quality: 1.0,"
        " episodes_per_task: 4}]",
        "data.trajectory_length=3", "train.global_batch=4", "loss.num_action_samples=2",
        "rlft.episodes_per_task=3", "rlft.finetune_steps=2", f"rlft.out_dir={out}",
        "eval.episodes_per_task=1", "eval.workers=1", "eval.videos_per_task=0",
        f"eval.out_dir={tmp_path / 'eval'}", f"tracking.uri=sqlite:///{tmp_path / 'ml.db'}",
        f"tracking.artifact_dir={tmp_path / 'artifacts'}",
    ]
    cfg = load_config(overrides=overrides)
    generate_group(cfg, "expert", store_root(data), workers=1, progress=False)
    TaskTokenizer.train(tokenizer_path(data), cfg.data.tokenizer_vocab, cfg.data.tokenizer_type)
    pretrained = save_inference_checkpoint(PerceiverActorCritic(cfg.model), cfg,
                                           tmp_path / "pretrained", tokenizer_path(data))

    work = round_dir(out, 1)
    args = [sys.executable, "-m", "pac.cli", "rlft", "--rounds", "1", "--checkpoint",
            str(pretrained)]
    for o in overrides:
        args += ["--set", o]
    log = tmp_path / "rlft.log"
    with open(log, "w") as fh:
        proc = subprocess.Popen(args, env=flow_env(Path.cwd()), stdout=fh,
                                stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 300
            while "ingested" not in _stages(work / STAGES_FILE):
                assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
                time.sleep(0.01)
        finally:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
    killed = _stages(work / STAGES_FILE)
    assert "finetuned" not in killed, "the round ended before the kill"
    rlft_run = json.loads((out / STATE_FILE).read_text())["mlflow_run_id"]

    robot = CountingRobot(cfg.data.episode_steps)
    result = rlft(cfg, pretrained, rounds=1, resume=True, robot=robot)
    assert robot.episodes == 0  # nothing collected again
    assert [r.round for r in result.rows] == [0, 1] and result.rows[1].episodes_added == 3
    assert len(list((work / "landing" / PROCESSED).glob("ingest-*.json"))) == 1  # one ingest
    eps = EpisodeStore(store_root(data), verify=True).episodes
    rollouts = eps[eps["group"] == "rollouts"]
    assert len(rollouts) == 3 and rollouts["content_hash"].is_unique
    assert result.run_id == rlft_run and result.rows[1].run_id == killed["run"]
    mlc = client(cfg)
    every = mlc.search_runs([experiment_id(mlc, cfg)])
    names = [r.info.run_name for r in every if r.info.status != "KILLED"]
    assert sorted(n for n in names if n.startswith("rlft")) == [
        "rlft", "rlft-round-0", "rlft-round-1"]
    assert "RUNNING" not in {r.info.status for r in every}, [
        (r.info.run_name, r.info.status) for r in every]


def _stages(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def test_a_run_a_killed_attempt_left_unrecorded_is_ended_killed_and_linked(tmp_path):
    """end_stale_runs closes the parent's RUNNING children of one name except the continued
    one, and nothing else (checked against the store's own records)."""
    from pac.config import load_config
    from pac.tracking import Tracker, end_stale_runs, get_run

    cfg = load_config(overrides=[f"tracking.uri=sqlite:///{tmp_path / 'ml.db'}",
                                 f"tracking.artifact_dir={tmp_path / 'artifacts'}"])
    parent = Tracker(cfg, "pac-flow").run_id
    orphan, kept, other_name = (Tracker(cfg, name, parent_run_id=parent).run_id
                                for name in ("pretrain-tiny", "pretrain-tiny", "eval-cartpole"))
    elsewhere = Tracker(cfg, "pretrain-tiny").run_id  # not a child of this parent
    done = Tracker(cfg, "pretrain-tiny", parent_run_id=parent)
    done.finish()

    assert end_stale_runs(cfg, parent, "pretrain-tiny", kept) == [orphan]
    status = {r: get_run(cfg, r)["status"] for r in (orphan, kept, other_name, elsewhere,
                                                       done.run_id)}
    assert status == {orphan: "KILLED", kept: "RUNNING", other_name: "RUNNING",
                      elsewhere: "RUNNING", done.run_id: "FINISHED"}
    assert get_run(cfg, orphan)["tags"]["pac.continued_in"] == kept
    assert end_stale_runs(cfg, parent, "pretrain-tiny", kept) == []  # idempotent
