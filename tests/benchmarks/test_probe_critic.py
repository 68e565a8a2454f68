"""benchmarks/probe_critic.py on a randomly initialised tiny checkpoint (real dm_control physics).

Independent references: the Q values the probe reports for a state and action are recomputed here
with a direct forward of the model (encode -> q_logits -> expected value over the support written
out in the test), and the Wilson interval of the reported counts against the closed form.
"""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import torch
from eval_helpers import tiny_checkpoint

from pac.batch import Observation
from pac.checkpoint import load_inference_checkpoint
from pac.data.tokenizer import TaskTokenizer

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("probe_critic", ROOT / "benchmarks/probe_critic.py")
probe = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(probe)


def _wilson(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def _direct_q(model, cfg, tokenizer, task: str, proprio: list[float], action: list[float]):
    """E[Q] by hand: padded input, z_M, Q logits, softmax . linspace(v_min, v_max, N_Q)."""
    m = cfg.model
    ids, mask = tokenizer.encode(task)
    x = torch.zeros(1, m.num_proprio)
    x[0, : len(proprio)] = torch.tensor(proprio)
    pmask = torch.zeros(1, m.num_proprio, dtype=torch.bool)
    pmask[0, : len(proprio)] = True
    obs = Observation(x, pmask, torch.tensor([list(ids)]), torch.tensor([list(mask)], dtype=bool))
    a = torch.zeros(1, 1, m.num_actions)
    a[0, 0, : len(action)] = torch.tensor(action)
    amask = torch.zeros(1, m.num_actions, dtype=torch.bool)
    amask[0, : len(action)] = True
    with torch.no_grad():
        logits = model.q_logits(model.encode(obs), a, amask)[0, 0].double()
    support = torch.linspace(cfg.loss.value_min, cfg.loss.value_max, logits.shape[-1]).double()
    return float((torch.softmax(logits, -1) * support).sum())


def test_probe_counts_q_values_and_wilson(tmp_path, capsys):
    ckpt = tiny_checkpoint(tmp_path)
    out = tmp_path / "probe.json"
    probe.main(["--checkpoint", str(ckpt), "--tasks", "point_mass.easy", "--episodes", "2",
                "--steps", "15", "--out", str(out)])
    printed = capsys.readouterr().out
    report = json.loads(out.read_text())
    (row,) = report["tasks"]

    assert row["task"] == "point_mass.easy" and row["num_samples"] == 10
    assert row["visited"] == 2 * 15 and row["states"] + row["skipped"] == row["visited"]
    assert row["states"] == len(row["per_state"]) > 0
    assert "| point_mass.easy |" in printed and report["table"] in printed
    assert f"| {row['states']} ({row['skipped']}) |" in report["table"]

    wins = sum(s["q_expert"] > s["q_data"] for s in row["per_state"])
    assert row["expert_wins"] == wins and 0.0 <= row["fraction"] <= 1.0
    assert row["fraction"] == wins / row["states"]
    if 0 < wins < row["states"]:
        low, high = _wilson(wins, row["states"])
        assert math.isclose(row["wilson_low"], low, abs_tol=1e-12)
        assert math.isclose(row["wilson_high"], high, abs_tol=1e-12)
    else:
        assert (row["wilson_low"] == 0.0) if wins == 0 else (row["wilson_high"] == 1.0)
    assert 0.0 <= row["wilson_low"] <= row["fraction"] <= row["wilson_high"] <= 1.0
    diffs = [s["q_expert"] - s["q_data"] for s in row["per_state"]]
    assert math.isclose(row["mean_q_diff"], float(np.mean(diffs)), abs_tol=1e-12)
    for s in row["per_state"]:
        gap = np.max(np.abs(np.subtract(s["a_expert"], s["a_data"])))
        assert gap >= 0.05
        assert 1.0 - 1e-9 <= s["ess"] <= 10.0 + 1e-9
        assert -1e-9 <= s["weight_entropy"] <= math.log(10) + 1e-9
        assert s["q_spread"] >= 0.0

    model, cfg, tok_path = load_inference_checkpoint(ckpt)
    model.eval()
    tokenizer = TaskTokenizer.load(tok_path, cfg.model.num_text_tokens)
    assert report["eta"] == cfg.loss.eta
    for s in row["per_state"][:3]:
        for key, action in (("q_expert", s["a_expert"]), ("q_data", s["a_data"])):
            q = _direct_q(model, cfg, tokenizer, "point_mass.easy", s["proprio"], action)
            assert math.isclose(s[key], q, rel_tol=1e-5, abs_tol=1e-6), (key, s[key], q)
    # the tiny random critic is not constant in the action (the comparison means something)
    assert len({round(s["q_expert"], 9) for s in row["per_state"]}) > 1
