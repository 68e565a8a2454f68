"""One flipped byte in the newest checkpoint: `train(cfg, resume=True)` refuses it, quarantines
it with a reason naming the file, falls back to the previous complete checkpoint and ends
bit-identical (torch.equal) to the uninterrupted run."""

import shutil

import torch
from safetensors.torch import load_file
from train.conftest import train_config

from pac.train import train
from pac.train.checkpoints import QUARANTINE


def test_flipped_byte_in_the_newest_checkpoint_falls_back_and_resumes_exactly(
        reference_run, data_root, mlflow_root, tmp_path, capsys):
    _, ref = reference_run  # the uninterrupted 20-update run: checkpoints step 10 and step 20
    run = tmp_path / "run"
    # the reference run's checkpoints (not its MLflow run file: the resume opens its own run)
    shutil.copytree(ref.out_dir / "checkpoints", run / "checkpoints")
    bad = run / "checkpoints" / "step_00000020" / "mp_rank_00_model_states.pt"
    data = bytearray(bad.read_bytes())
    data[len(data) // 2] ^= 0x01
    bad.write_bytes(bytes(data))

    result = train(train_config(run, mlflow_root), resume=True, data_root=data_root)
    out = capsys.readouterr().out
    assert result.start_step == 10  # the previous complete checkpoint
    moved = run / "checkpoints" / QUARANTINE / "step_00000020"
    assert (moved / "mp_rank_00_model_states.pt").read_bytes() == bytes(data)  # kept, not lost
    reason = (moved.parent / "step_00000020.reason.txt").read_text()
    assert reason == "file mp_rank_00_model_states.pt does not match its SHA-256\n"
    assert ("pac train: checkpoint step_00000020 is not usable (file mp_rank_00_model_states.pt"
            " does not match its SHA-256); quarantined") in out
    assert "resuming from" in out and "step_00000010 (update 10)" in out

    expected = load_file(str(ref.policy_dir / "model.safetensors"))
    got = load_file(str(result.policy_dir / "model.safetensors"))
    assert expected.keys() == got.keys()
    assert all(torch.equal(expected[k], got[k]) for k in expected)
