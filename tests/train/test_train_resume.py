"""Exact resume: SIGKILL a `pac train` process after a checkpoint, resume, compare parameters.

Tolerance: none. On CPU with one rank the resumed run's final weights, its target network and
its Adam moments are bit-identical (torch.equal) to those of an uninterrupted run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

from pac.tracking import get_run, metric_history
from pac.train import train
from pac.train.checkpoints import MANIFEST, QUARANTINE, TARGET

from .conftest import clean_env, train_config, train_overrides


def test_sigkill_after_checkpoint_then_resume_is_exact(reference_run, data_root, mlflow_root,
                                                       tmp_path):
    ref_cfg, ref = reference_run  # the uninterrupted 20-update run (same params, ZeRO-0)
    run = tmp_path / "run"
    args = [sys.executable, "-m", "pac.cli", "train", "--data-root", str(data_root)]
    for o in train_overrides(run, mlflow_root):
        args += ["--set", o]
    log = tmp_path / "train.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(args, env=clean_env(), stdout=out, stderr=subprocess.STDOUT)
        first = run / "checkpoints" / "step_00000010" / MANIFEST  # written last: complete
        deadline = time.monotonic() + 300
        while not first.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert first.exists(), log.read_text()[-3000:]
    assert proc.returncode == -signal.SIGKILL
    assert not (run / "policy").exists(), "the run ended before it could be killed"
    run_id = json.loads((run / "mlflow_run.json").read_text())["run_id"]
    assert get_run(ref_cfg, run_id)["status"] == "RUNNING"  # killed: never marked finished

    # what a kill during a later save leaves behind: a checkpoint without manifest
    partial = run / "checkpoints" / "step_00000015"
    partial.mkdir(exist_ok=True)
    (partial / "mp_rank_00_model_states.pt").write_bytes(b"half a file")

    cfg = train_config(run, mlflow_root)
    result = train(cfg, resume=True, data_root=data_root)
    assert result.start_step == 10
    assert (run / "checkpoints" / QUARANTINE / "step_00000015").is_dir()
    assert result.run_id == run_id  # the same MLflow run continues
    assert get_run(cfg, run_id)["status"] == "FINISHED"
    assert [s for s, _ in metric_history(cfg, run_id, "loss/total")][-2:] == [15, 20]

    expected = load_file(str(ref.policy_dir / "model.safetensors"))
    got = load_file(str(result.policy_dir / "model.safetensors"))
    assert expected.keys() == got.keys()
    diff = max((expected[k] - got[k]).abs().max().item() for k in expected)
    print(f"max |theta_resumed - theta_uninterrupted| = {diff}")
    assert all(torch.equal(expected[k], got[k]) for k in expected)
    # theta' and the optimiser state of the final checkpoints match too
    t_ref = load_file(str(ref.checkpoint / TARGET))
    t_got = load_file(str(result.checkpoint / TARGET))
    assert all(torch.equal(t_ref[k], t_got[k]) for k in t_ref)
    opt_ref = _adam_moments(ref.checkpoint)
    opt_got = _adam_moments(result.checkpoint)
    assert len(opt_ref) > 0 and all(torch.equal(a, b) for a, b in zip(opt_ref, opt_got))


def _adam_moments(ckpt: Path) -> list[torch.Tensor]:
    """exp_avg / exp_avg_sq of a DeepSpeed ZeRO-0 checkpoint (loaded without unpickling code)."""
    state = torch.load(ckpt / "mp_rank_00_model_states.pt", map_location="cpu",
                       weights_only=True)["optimizer"]["state"]
    return [s[k] for i in sorted(state) for s in [state[i]] for k in ("exp_avg", "exp_avg_sq")]


def test_train_after_zero3_in_process_equals_a_fresh_process(reference_run, data_root,
                                                             mlflow_root, tmp_path):
    """A run in a process that already ran a ZeRO-3 engine is bit-identical to the same run in a
    fresh process: nothing the earlier engine did to the process (DeepSpeed's replacement of
    torch.nn.functional.linear under ZeRO-3) reaches the later run."""
    import torch.nn.functional as F

    zero3 = train_config(tmp_path / "zero3", mlflow_root, "train.steps=2", "train.log_every=1",
                         "train.checkpoint_every=2", "train.zero_stage=3")
    train(zero3, data_root=data_root)
    assert F.linear is torch._C._nn.linear, "the ZeRO-3 engine left a patched F.linear behind"

    in_process = train(train_config(tmp_path / "second", mlflow_root), data_root=data_root)
    fresh = tmp_path / "fresh"
    args = [sys.executable, "-m", "pac.cli", "train", "--data-root", str(data_root)]
    for o in train_overrides(fresh, mlflow_root):
        args += ["--set", o]
    proc = subprocess.run(args, env=clean_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    expected = load_file(str(fresh / "policy" / "model.safetensors"))
    got = load_file(str(in_process.policy_dir / "model.safetensors"))
    assert all(torch.equal(expected[k], got[k]) for k in expected)
    # and both equal the session's first in-process run (same params)
    ref = load_file(str(reference_run[1].policy_dir / "model.safetensors"))
    assert all(torch.equal(ref[k], got[k]) for k in ref)
