"""params/presets/pixels.yaml through the flow: rendered data, a pixels-only policy (one camera,
proprioception masked) trained, evaluated in dm_control from rendered frames, handed over."""

from __future__ import annotations

import json

import numpy as np
from flow_helpers import copy_project, run_flow

TINY = ";".join([
    "data.episode_steps=25",
    "data.groups=[{name: expert, tasks: [point_mass.easy, cartpole.balance], quality: 1.0,"
    " episodes_per_task: 4}]",
    "train.steps=20", "train.global_batch=4", "train.log_every=5", "train.checkpoint_every=10",
    "train.warmup_steps=3", "eval.episodes_per_task=2", "eval.videos_per_task=0",
    "eval.workers=1",
])


def test_the_pixels_preset_runs_through_the_flow(tmp_path):
    from pac.checkpoint import load_checkpoint_config
    from pac.data import EpisodeStore, store_root

    copy_project(tmp_path)
    run = run_flow(tmp_path, "--no-pylint", "run", "--params-file", "params/presets/pixels.yaml",
                   "--set", TINY, "--rounds", "0")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "PAC flow finished" in run.stdout + run.stderr
    store = EpisodeStore(store_root(tmp_path / "data_pixels"))
    (images,) = {s.images.shape[1:] for s in store.shards}
    assert images == (1, 80, 80, 3)
    assert all(np.asarray(s.images).std() > 0 for s in store.shards)  # rendered, not blank
    assert not [g for g in (tmp_path / "data" / "episodes").iterdir() if g.is_dir()]  # untouched
    policy = next((tmp_path / "runs" / "flow").glob("*/pretrain/policy"))
    cfg = load_checkpoint_config(policy)
    assert (cfg.model.num_images, cfg.model.proprio_input) == (1, False)
    merged = json.loads(next((tmp_path / "runs" / "flow").glob("*/eval/metrics.json"))
                        .read_text())
    assert merged["train"]["all"]["episodes"] == 4  # both tasks, rolled out from pixels
