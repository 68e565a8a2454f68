"""Training precision: `train.precision: auto` resolution, and bf16 autocast training on CPU
against the fp32 run (same data, same initial weights, same loss samples).

Tolerance of the parity test: every logged loss window (5 updates each) of the bf16 run lies
within 2% (relative) of the fp32 run's, the first window (the same initial weights) within 1%;
measured on the test's tiny run: 0.18% for the first window, at most 0.19% over 20 updates.
"""

from __future__ import annotations

import torch
from safetensors.torch import load_file

from pac.config import TrainConfig
from pac.tracking import get_run
from pac.train import train
from pac.train.ds_config import (
    CPU_BF16_FLAGS,
    CPU_BF16_MIN_SPEEDUP,
    cpu_bf16_speedup,
    cpu_flags,
    deepspeed_config,
    effective_precision,
)

from .conftest import train_config
from .test_train_engine import assert_learns


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: X\nflags\t\t: fpu avx2 avx512_bf16 amx_tile\n"
                       "\nprocessor\t: 1\nflags\t\t: fpu avx2 avx512_bf16 amx_tile\n")
    assert cpu_flags(cpuinfo) == {"fpu", "avx2", "avx512_bf16", "amx_tile"}
    assert cpu_flags(tmp_path / "absent") is None  # not Linux: auto falls back to measuring


def test_precision_resolution_and_deepspeed_bf16():
    assert effective_precision(TrainConfig(precision="fp32"), "cuda") == "fp32"
    assert effective_precision(TrainConfig(precision="bf16"), "cpu") == "bf16"  # honoured
    assert effective_precision(TrainConfig(precision="auto"), "cuda") == "bf16"  # no GPU here
    assert TrainConfig().precision == "auto"
    flags = cpu_flags()
    if flags is not None and not flags & set(CPU_BF16_FLAGS):  # emulated bf16: never chosen
        assert cpu_bf16_speedup() == 0.0
        assert effective_precision(TrainConfig(precision="auto"), "cpu") == "fp32"
    # at a D_Z 64 model's width bf16 does not pay on any CPU measured (AMX Xeon: 0.26x)
    assert cpu_bf16_speedup(64) < CPU_BF16_MIN_SPEEDUP
    assert effective_precision(TrainConfig(precision="auto"), "cpu", 64) == "fp32"
    # DeepSpeed's bf16 mode only on GPUs; a CPU bf16 run is autocast over fp32 weights
    t = TrainConfig(precision="bf16")
    assert deepspeed_config(t, 1, "cpu")["bf16"]["enabled"] is False
    assert deepspeed_config(t, 1, "cuda")["bf16"]["enabled"] is True
    assert deepspeed_config(t, 1, "cuda", "fp32")["bf16"]["enabled"] is False
    assert deepspeed_config(t, 1, "cpu")["optimizer"]["params"]["fused"] is True  # CPU kernel


def test_bf16_training_tracks_the_fp32_run(reference_run, data_root, mlflow_root, tmp_path,
                                           monkeypatch):
    """... and the weights periodic evaluation scores after the last update, the exported ones
    and those a resume restores are the same fp32 tensors, bit for bit (theta' is bf16: an
    export through it would round theta to bf16)."""
    from pac.train import periodic_eval

    scored: dict[int, dict[str, torch.Tensor]] = {}
    evaluate_now = periodic_eval.evaluate_now

    def recording(cfg, model, out_dir, step, *args):  # the real evaluation, weights recorded
        scored[step] = {k: v.clone() for k, v in model.state_dict().items()}
        return evaluate_now(cfg, model, out_dir, step, *args)

    monkeypatch.setattr(periodic_eval, "evaluate_now", recording)
    ref_cfg, ref = reference_run  # fp32 (auto on a CPU without native bf16, or explicit)
    cfg = train_config(tmp_path / "run", mlflow_root, "train.precision=bf16",
                       "train.eval_every=20", "train.eval_episodes=1", "eval.held_out_tasks=[]")
    result = train(cfg, data_root=data_root)
    assert result.precision == "bf16"
    assert get_run(cfg, result.run_id)["params"]["precision"] == "bf16"
    assert get_run(ref_cfg, ref.run_id)["params"]["precision"] == ref.precision

    got = [h["loss/total"] for h in result.history]
    want = [h["loss/total"] for h in ref.history]
    rel = [abs(g - w) / abs(w) for g, w in zip(got, want, strict=True)]
    print(f"fp32 {want}\nbf16 {got}\nrelative difference {rel}")
    if ref.precision == "fp32":
        assert rel[0] < 0.01 and max(rel) < 0.02
    assert_learns(result.history)

    # fp32 master weights and Adam states; bf16 did run (the weights are not the fp32 ones)
    weights = load_file(str(result.policy_dir / "model.safetensors"))
    ref_weights = load_file(str(ref.policy_dir / "model.safetensors"))
    assert {w.dtype for w in weights.values()} == {torch.float32}
    assert not all(torch.equal(weights[k], ref_weights[k]) for k in weights)
    states = torch.load(result.checkpoint / "mp_rank_00_model_states.pt", map_location="cpu",
                        weights_only=True)
    moments = [v for s in states["optimizer"]["state"].values() for v in s.values()
               if torch.is_tensor(v) and v.dim() > 0]
    assert moments and {m.dtype for m in moments} == {torch.float32}
    assert states["optimizer"]["param_groups"][0]["fused"] is True  # torch's fused CPU AdamW
    target = load_file(str(result.checkpoint / "target.safetensors"))
    assert {w.dtype for w in target.values()} == {torch.bfloat16}  # theta' in bf16

    assert list(scored) == [20] and scored[20].keys() == weights.keys()
    assert all(torch.equal(scored[20][k], weights[k]) for k in weights)  # scored = exported
    assert not all(torch.equal(weights[k], target[k].float()) for k in weights)  # not via theta'
    resumed = train(cfg, resume=True, data_root=data_root)  # finished: restore, export again
    again = load_file(str(resumed.policy_dir / "model.safetensors"))
    assert all(again[k].dtype == torch.float32 and torch.equal(again[k], weights[k])
               for k in weights)
