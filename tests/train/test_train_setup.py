"""Training set-up without compute: Table 12 schedule, DeepSpeed config, invalid settings, plan."""

import json
import math
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from pac.config import ConfigError, TrainConfig, load_config
from pac.train.checkpoints import (
    find_latest,
    quarantine,
    rng_state,
    set_rng_state,
    verify,
    write_manifest,
)
from pac.train.ds_config import batch_layout, deepspeed_config
from pac.train.plan import (
    TABLE_17,
    attention_block_flops,
    make_plan,
    parameter_counts,
    update_flops,
)
from pac.train.schedule import decay_steps, learning_rate, warmup_steps

PRESETS = "params/presets"


def test_table12_schedule_warmup_peak_cosine_end():
    t = TrainConfig(steps=1000, lr_init=1e-6, lr_peak=1e-4, lr_end=1e-5, warmup_steps=100,
                    decay_steps=800)
    assert learning_rate(0, t) == pytest.approx(1e-6)
    assert learning_rate(50, t) == pytest.approx(1e-6 + 0.5 * (1e-4 - 1e-6))  # linear
    assert learning_rate(100, t) == pytest.approx(1e-4)  # peak right after warm-up
    assert learning_rate(500, t) == pytest.approx(1e-5 + 0.5 * 9e-5)  # half-way: cosine mid
    assert learning_rate(900, t) == pytest.approx(1e-5)  # end of decay
    assert learning_rate(999, t) == pytest.approx(1e-5)  # held at lr_end afterwards
    lrs = [learning_rate(s, t) for s in range(100, 901)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))  # monotone decay


def test_card_schedule_warms_up_over_five_percent():
    cfg = load_config(f"{PRESETS}/card15B.yaml", ["train.steps=2000"])
    t = cfg.train
    assert warmup_steps(t) == 100 and decay_steps(t) == 1900
    assert learning_rate(100, t) == pytest.approx(3e-4)
    assert learning_rate(1999, t) == pytest.approx(t.lr_end, rel=1e-3)


@pytest.mark.parametrize(
    ("global_batch", "micro", "world", "expected"),
    [(32, 0, 1, (32, 1)), (32, 8, 1, (8, 4)), (32, 0, 2, (16, 1)), (512, 16, 8, (16, 4))],
)
def test_batch_layout(global_batch, micro, world, expected):
    layout = batch_layout(TrainConfig(global_batch=global_batch, micro_batch=micro), world)
    assert (layout.micro_batch, layout.accumulation) == expected
    assert layout.micro_batch * layout.accumulation * world == global_batch


def test_deepspeed_config_paper_optimiser():
    cfg = load_config(overrides=["train.zero_stage=2", "train.global_batch=32",
                                 "train.micro_batch=8"])
    ds = deepspeed_config(cfg.train, world_size=2, device_type="cpu")
    opt = ds["optimizer"]["params"]
    assert ds["optimizer"]["type"] == "AdamW" and opt["betas"] == [0.9, 0.95]
    assert opt["weight_decay"] == 1e-3 and opt["torch_adam"] is True
    assert ds["gradient_clipping"] == 1.0 and ds["zero_optimization"]["stage"] == 2
    assert (ds["train_batch_size"], ds["train_micro_batch_size_per_gpu"],
            ds["gradient_accumulation_steps"]) == (32, 8, 2)
    assert ds["bf16"]["enabled"] is False  # fp32 on CPU
    gpu = deepspeed_config(load_config(f"{PRESETS}/L.yaml").train, 8, "cuda")
    assert gpu["bf16"]["enabled"] is True and gpu["optimizer"]["params"]["torch_adam"] is False


@pytest.mark.parametrize(
    ("overrides", "world", "message"),
    [
        (["train.global_batch=33"], 2, "not divisible by the world size 2"),
        (["train.global_batch=32", "train.micro_batch=5"], 1, "does not divide"),
        (["train.offload_optimizer=true", "train.zero_stage=2"], 1, "needs a GPU"),
    ],
)
def test_invalid_batch_and_offload_fail_clearly(overrides, world, message):
    cfg = load_config(overrides=overrides)
    with pytest.raises(ConfigError, match=message):
        deepspeed_config(cfg.train, world, "cpu")


def test_zero_stage_4_is_rejected_by_the_config():
    with pytest.raises(ConfigError, match="DeepSpeed ZeRO stages are 0-3"):
        load_config(overrides=["train.zero_stage=4"])


def test_invalid_settings_stop_the_cli_before_compute(tmp_path):
    """`pac train` with ZeRO-4, an indivisible batch or no data exits 2 with the reason."""
    cases = [
        (["--set", "train.zero_stage=4"], {}, "DeepSpeed ZeRO stages are 0-3"),
        (["--set", "train.global_batch=33"], {"WORLD_SIZE": "2", "RANK": "0"},
         "not divisible by the world size 2"),
        (["--data-root", str(tmp_path / "nowhere")], {}, "missing episodes data"),
    ]
    for args, env, message in cases:
        proc = subprocess.run(
            [sys.executable, "-m", "pac.cli", "train", *args,
             "--set", f"train.out_dir={tmp_path / 'run'}"],
            capture_output=True, text=True, timeout=120,
            env={**__import__("os").environ, **env},
        )
        assert proc.returncode == 2, proc.stderr
        assert message in proc.stderr
        assert "Traceback" not in proc.stderr
        assert not (tmp_path / "run").exists()  # nothing was written


def test_attention_flops_match_the_chinchilla_count():
    # self-attention, seq 32, d 64, 4 heads, MLP 128: every term of Chinchilla App. F
    n, d, h, f = 32, 64, 4, 128
    expected = 2 * 3 * n * d * d + 2 * n * n * d + 3 * h * n * n + 2 * n * n * d + 2 * n * d * d
    expected += 2 * n * (d * f + f * d)
    assert attention_block_flops(n, n, d, d, d, h, f) == expected


def test_flops_reproduce_table17_order_of_magnitude():
    ratios = {}
    for scale, (fwd, bwd, update) in TABLE_17.items():
        assert bwd == pytest.approx(2.01 * fwd, rel=1e-3)  # the paper's own rule
        cfg = load_config(f"{PRESETS}/L.yaml", [f"model.scale={scale}"])
        f = update_flops(cfg.model, 512, 100)
        assert f["BWD"] == pytest.approx(2.01 * f["FWD"])  # (2 + 1/f_theta') FWD
        assert f["UPDATE"] == pytest.approx(512 * (f["FWD"] + f["BWD"]))
        ratios[scale] = f["FWD"] / fwd
        assert f["UPDATE"] / update == pytest.approx(ratios[scale], rel=1e-2)
    print("App. E.2 count / Table 17 forward FLOPs:", {k: round(v, 3) for k, v in ratios.items()})
    # the measured gap (pac/train/plan.py, tests/train/test_flops.py): the latent stack
    assert all(0.69 < r < 0.955 for r in ratios.values())
    flops = [update_flops(load_config(f"{PRESETS}/L.yaml", [f"model.scale={s}"]).model, 512,
                          100)["UPDATE"] for s in TABLE_17]
    assert flops == sorted(flops)  # grows with scale like the paper's column


def test_plan_card15b_on_64_a100_and_l_on_8():
    card_cfg = load_config(f"{PRESETS}/card15B.yaml")
    # the card's 2048 transitions per update spread over its 64 GPUs: one window per rank
    assert card_cfg.train.global_batch * card_cfg.data.trajectory_length == 2048
    assert batch_layout(card_cfg.train, 64).per_rank == 1
    card = make_plan(card_cfg, gpus=64, gpu_mem_gib=80)
    assert 14e9 < card.params < 17e9
    by_stage = {r.stage: r for r in card.rows if r.offload == "none"}
    # ZeRO-3: 18 bytes/param / 64 GPUs + the largest layer (DeepSpeed's formula)
    assert by_stage[3].gpu_gib == pytest.approx(
        (4 * card.largest_layer + 18 * card.params / 64) / 2**30, rel=1e-3
    )
    assert not card.fits(by_stage[0]) and not card.fits(by_stage[1])
    assert card.fits(by_stage[3])
    big = make_plan(load_config(f"{PRESETS}/L.yaml"), gpus=8, gpu_mem_gib=80)
    assert abs(big.params - 988e6) / 988e6 < 0.05 and big.fits(big.rows[0])
    assert math.isclose(big.flops["BWD"], 2.01 * big.flops["FWD"])


def test_parameter_count_on_meta_device_matches_the_real_model():
    from pac.model import PerceiverActorCritic

    cfg = load_config()
    total, largest = parameter_counts(cfg.model)
    assert total == sum(p.numel() for p in PerceiverActorCritic(cfg.model).parameters())
    assert 0 < largest < total


def test_checkpoint_manifest_rejects_incomplete_and_tampered(tmp_path):
    root = tmp_path / "checkpoints"
    good, bad, partial = root / "step_00000010", root / "step_00000020", root / "step_00000030"
    for folder in (good, bad, partial):
        folder.mkdir(parents=True)
        (folder / "weights.bin").write_bytes(b"weights of " + folder.name.encode())
    write_manifest(good, 10)
    write_manifest(bad, 20)
    (bad / "weights.bin").write_bytes(b"flipped bits")  # corrupted after the save
    assert verify(good) is None
    assert "does not match" in verify(bad) and "no manifest" in verify(partial)
    found = find_latest(root)
    assert (found.path, found.step) == (good, 10)
    assert [p.name for p, _ in found.rejected] == ["step_00000030", "step_00000020"]
    moved = quarantine(root, found.rejected)
    assert {p.name for p in moved} == {"step_00000020", "step_00000030"}
    assert (root / "quarantine" / "step_00000030.reason.txt").read_text().startswith("no manifest")
    assert find_latest(root).rejected == []


def test_rng_states_round_trip():
    gen = torch.Generator().manual_seed(3)
    state = json.loads(json.dumps(rng_state(gen)))  # JSON-safe
    expected = (torch.rand(3, generator=gen), torch.rand(3), np.random.rand(), random.random())
    set_rng_state(state, gen)
    again = (torch.rand(3, generator=gen), torch.rand(3), np.random.rand(), random.random())
    assert torch.equal(expected[0], again[0]) and torch.equal(expected[1], again[1])
    assert expected[2:] == again[2:]


def test_read_metrics_one_read_of_device_sums():
    from pac.train.trainer import grad_norm, read_metrics

    w = torch.nn.Parameter(torch.zeros(2))
    w.grad = torch.tensor([3.0, 4.0])
    sums = {"loss/total": torch.tensor(6.0), "grad_norm": grad_norm([w]) + 1.0, "x": 1.5}
    assert isinstance(sums["grad_norm"], torch.Tensor)  # no host read per update
    assert read_metrics(sums, 3) == pytest.approx({"loss/total": 2.0, "grad_norm": 2.0, "x": 0.5})


def test_deepspeed_op_build_is_announced_only_when_it_will_build(tmp_path, monkeypatch, capsys):
    """The op's cache place is torch's own (cpp_extension's build directory), not ours."""
    from torch.utils.cpp_extension import _get_build_directory

    from pac.train.engine import announce_op_build, pending_op_build

    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    monkeypatch.setenv("LOCAL_RANK", "0")
    assert pending_op_build("ShareMemCommBuilder") == "deepspeed_shm_comm"  # empty cache
    line = announce_op_build("ShareMemCommBuilder", "CPU communication")
    assert line and "building DeepSpeed's CPU communication op deepspeed_shm_comm" in line
    assert line in capsys.readouterr().out
    monkeypatch.setenv("LOCAL_RANK", "1")  # other ranks stay quiet
    assert announce_op_build("ShareMemCommBuilder", "CPU communication") is None
    monkeypatch.setenv("LOCAL_RANK", "0")
    built = Path(_get_build_directory("deepspeed_shm_comm", False)) / "deepspeed_shm_comm.so"
    built.write_bytes(b"")  # what a finished build leaves
    assert pending_op_build("ShareMemCommBuilder") is None
    assert announce_op_build("ShareMemCommBuilder", "CPU communication") is None
    assert capsys.readouterr().out == ""
