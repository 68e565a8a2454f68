"""`train` on a real DeepSpeed engine: the tiny PAC model on generated dm_control data.

ZeRO 0-3 with one rank (in this process), ZeRO 2 and 3 with two gloo ranks (torchrun and the
deepspeed launcher); every run must lower the loss and land in a real sqlite MLflow store with
every alpha/beta param and each loss term as a metric.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from pac.checkpoint import load_checkpoint_horizons, load_inference_checkpoint
from pac.config import ConfigError
from pac.tracking import get_run, list_artifacts, load_policy_model, metric_history
from pac.train import train

from .conftest import clean_env, train_config, train_overrides

LOSS_METRICS = ("loss/total", "loss/policy_improvement", "loss/bc", "loss/q")
OTHER_METRICS = ("lr", "grad_norm", "mean_q", "alpha", "samples_per_s", "steps_per_s", "mfu")
SHORT = ["train.steps=10", "train.log_every=5", "train.checkpoint_every=10"]
TWO_RANKS = ["train.steps=6", "train.log_every=3", "train.checkpoint_every=6"]


def assert_learns(history: list[dict[str, float]]) -> None:
    first, last = history[0], history[-1]
    print(f"loss/total {first['loss/total']:.3f} -> {last['loss/total']:.3f},"
          f" loss/bc {first['loss/bc']:.3f} -> {last['loss/bc']:.3f}")
    assert last["loss/total"] < first["loss/total"]
    assert last["loss/bc"] < first["loss/bc"]


def assert_tracked(cfg, run_id: str, world_size: int, stage: int) -> dict:
    info = get_run(cfg, run_id)
    assert info["status"] == "FINISHED"
    params = info["params"]
    for group in cfg.data.groups:  # every alpha/beta of every dataset group
        assert params[f"data.groups.{group.name}.alpha"] == str(group.alpha)
        assert params[f"data.groups.{group.name}.beta"] == str(group.beta)
    assert params["loss.eta"] == str(cfg.loss.eta) and params["loss.alpha"] == str(cfg.loss.alpha)
    assert params["zero_stage"] == str(stage) and params["world_size"] == str(world_size)
    assert params["scale"] == "tiny" and int(params["num_params"]) > 100_000
    assert len(params["data_version.episodes_fingerprint"]) == 64
    assert params["git_commit"]
    for key in LOSS_METRICS + OTHER_METRICS:
        assert key in info["metrics"], key
    steps = [s for s, _ in metric_history(cfg, run_id, "loss/total")]
    assert steps == list(range(cfg.train.log_every, cfg.train.steps + 1, cfg.train.log_every))
    return info


def test_zero0_trains_tracks_and_exports(reference_run):
    cfg, result = reference_run
    assert_learns(result.history)
    info = assert_tracked(cfg, result.run_id, world_size=1, stage=0)
    assert info["metrics"]["alpha"] == cfg.loss.alpha  # variant pac: one alpha for all groups
    assert info["metrics"]["mfu"] > 0 and info["metrics"]["samples_per_s"] > 0
    # artefacts: resolved config, final checkpoint, the policy once (as the pyfunc model)
    top = set(list_artifacts(cfg, result.run_id))
    assert {"config.yaml", "metrics.json", "checkpoints", "policy_model"} <= top
    assert list_artifacts(cfg, result.run_id, "checkpoints") == ["checkpoints/step_00000020"]
    # the inference checkpoint equals theta after the last update and serves actions
    model, loaded_cfg, tokenizer = load_inference_checkpoint(result.policy_dir)
    assert loaded_cfg.model == cfg.model and tokenizer is not None
    # the horizon of the training data travels with it: the generated episodes' time limit
    assert load_checkpoint_horizons(result.policy_dir) == {
        "cartpole.balance": cfg.data.episode_steps, "point_mass.easy": cfg.data.episode_steps}
    pyfunc = load_policy_model(cfg, f"runs:/{result.run_id}/policy_model")
    actions = pyfunc.predict(pd.DataFrame({
        "instruction": ["point_mass.easy", "cartpole.balance"],
        "proprio": [[0.1, -0.1, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0, 0.0]],
    }))
    assert [len(a) for a in actions] == [2, 1]
    assert all(-1.0 <= x <= 1.0 for a in actions for x in a)


@pytest.mark.parametrize("stage", [1, 2, 3])
def test_zero_stages_one_rank(stage, data_root, mlflow_root, reference_run, tmp_path):
    cfg = train_config(tmp_path / "run", mlflow_root, *SHORT, f"train.zero_stage={stage}")
    result = train(cfg, data_root=data_root)
    assert_learns(result.history)
    assert_tracked(cfg, result.run_id, world_size=1, stage=stage)
    # same data, same init: the first logged losses (updates 1-5) agree with ZeRO-0
    ref = reference_run[1].history[0]
    assert result.history[0]["loss/total"] == pytest.approx(ref["loss/total"], rel=1e-4)
    # theta' (refreshed after update 10 from the weights gathered per sub-module) and the export
    # both hold the complete final theta; the zero-initialised policy head has been trained
    weights = load_file(str(result.policy_dir / "model.safetensors"))
    target = load_file(str(result.checkpoint / "target.safetensors"))
    assert weights.keys() == target.keys()
    assert all(torch.equal(weights[k], target[k]) for k in weights)
    assert weights["policy_decoder.head.weight"].abs().sum() > 0


@pytest.mark.parametrize(
    ("stage", "launcher"),
    [(2, "torchrun"), (3, "deepspeed")],
)
def test_zero_stages_two_ranks(stage, launcher, data_root, mlflow_root, tmp_path):
    extra = (*TWO_RANKS, f"train.zero_stage={stage}")
    overrides = train_overrides(tmp_path / "run", mlflow_root, *extra)
    pac_args = ["train", "--data-root", str(data_root)]
    for o in overrides:
        pac_args += ["--set", o]
    bindir = Path(sys.executable).parent
    if launcher == "torchrun":
        cmd = [str(bindir / "torchrun"), "--standalone", "--nproc_per_node", "2",
               "-m", "pac.cli", *pac_args]
    else:
        cmd = [str(bindir / "deepspeed"), "--num_gpus", "2", "--master_port",
               str(29500 + os.getpid() % 1000), str(bindir / "pac"), *pac_args]
    proc = subprocess.run(cmd, env=clean_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    cfg = train_config(tmp_path / "run", mlflow_root, *extra)
    run_id = json.loads((Path(cfg.train.out_dir) / "mlflow_run.json").read_text())["run_id"]
    info = assert_tracked(cfg, run_id, world_size=2, stage=stage)
    history = [
        {k: dict(metric_history(cfg, run_id, k))[s] for k in ("loss/total", "loss/bc")}
        for s, _ in metric_history(cfg, run_id, "loss/total")
    ]
    assert_learns(history)
    assert info["params"]["micro_batch"] == "2"  # global batch 4 over 2 ranks
    # both ranks wrote their RNG state; rank 0 the target network and the manifest
    ckpt = Path(cfg.train.out_dir) / "checkpoints" / "step_00000006"
    assert {"rng_rank0.json", "rng_rank1.json", "target.safetensors", "manifest.json"} <= {
        p.name for p in ckpt.iterdir()
    }
    model, _, _ = load_inference_checkpoint(Path(cfg.train.out_dir) / "policy")
    assert sum(p.numel() for p in model.parameters()) == int(info["params"]["num_params"])


def test_init_from_starts_at_the_given_weights(reference_run, data_root, mlflow_root, tmp_path):
    """RLFT start: with a zero learning rate the fine-tuned weights stay the given ones."""
    _, ref = reference_run
    cfg = train_config(tmp_path / "run", mlflow_root, "train.steps=2", "train.log_every=1",
                       "train.lr_init=0.0", "train.lr_peak=1.0e-30", "train.lr_end=0.0",
                       "train.weight_decay=0.0")
    result = train(cfg, init_from=ref.policy_dir, data_root=data_root)
    start = load_file(str(ref.policy_dir / "model.safetensors"))
    end = load_file(str(result.policy_dir / "model.safetensors"))
    assert all(torch.allclose(start[k], end[k], rtol=0, atol=1e-12) for k in start)
    assert get_run(cfg, result.run_id)["tags"]["pac.stage"] == "finetune"


def test_init_from_with_another_architecture_fails_before_compute(reference_run, tmp_path,
                                                                  mlflow_root, data_root):
    _, ref = reference_run
    cfg = train_config(tmp_path / "run", mlflow_root, "model.num_blocks=1")
    with pytest.raises(ConfigError, match="model differs from params: num_blocks"):
        train(cfg, init_from=ref.policy_dir, data_root=data_root)
    assert not Path(cfg.train.out_dir).exists()


def test_empty_store_is_a_missing_data_version(tmp_path, mlflow_root, data_root):
    root = tmp_path / "data"
    (root / "episodes").mkdir(parents=True)
    shutil.copytree(data_root / "tokenizer", root / "tokenizer")
    cfg = train_config(tmp_path / "run", mlflow_root)
    with pytest.raises(ConfigError, match="missing data version"):
        train(cfg, data_root=root)
    assert not Path(cfg.train.out_dir).exists()
