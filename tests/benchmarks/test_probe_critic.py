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


class _ClosedFormCritic:
    """A stand-in for PolicyServer whose Q(s, a) is a closed-form function of the action alone,
    so the probe's direction and grid statistics have exact answers (real physics for states)."""

    def __init__(self, q, eta: float = 0.02):
        self.q = q
        self.cfg = type("Cfg", (), {"loss": type("Loss", (), {"eta": eta})()})()

    def q_values(self, proprio, task, actions, num_samples=0, images=None, generator=None):
        samples = np.random.default_rng(0).uniform(-1, 1, (num_samples, actions.shape[1]))
        return (np.array([self.q(a) for a in actions], np.float64),
                np.array([self.q(a) for a in samples], np.float64))


def test_grid_is_every_combination():
    grid = probe.action_grid(-1.0, 1.0, 2)
    axis = [-1.0, -0.5, 0.0, 0.5, 1.0]
    assert sorted(map(tuple, grid.tolist())) == sorted((x, y) for x in axis for y in axis)


def test_a_linear_critic_points_to_the_corner_of_its_gradient():
    """Q = a . d: the best grid action is the corner sign(d) (on the boundary), its cosine with
    a_e is the closed form, and Q(a_e) > Q(-a_e) exactly where a_e . d > 0."""
    d = np.array([1.0, 0.5])
    row = probe.probe_task(_ClosedFormCritic(lambda a: float(a @ d)), "point_mass.easy", 0.3, 1,
                           0, 20, suboptimal="weak")
    states = row["per_state"]
    assert states and row["grid_on_boundary"] == 1.0
    corner = np.array([1.0, 1.0])
    for s in states:
        assert s["grid_best"] == [1.0, 1.0] and s["grid_best_on_boundary"]
        a_e = np.array(s["a_expert"])
        assert math.isclose(s["grid_cosine"], corner @ a_e / (np.sqrt(2) * np.linalg.norm(a_e)),
                            rel_tol=1e-6)
        assert math.isclose(s["q_mirrored"], float(-a_e @ d), rel_tol=1e-6, abs_tol=1e-9)
    toward = np.mean([np.array(s["a_expert"]) @ d > 0 for s in states])
    assert row["over_mirrored"] == toward
    assert math.isclose(row["mean_mirrored_diff"],
                        np.mean([2 * np.array(s["a_expert"]) @ d for s in states]), rel_tol=1e-6)


def test_a_peaked_critic_has_an_interior_best_action():
    """Q = -|a - c|^2 with c on the grid: the best grid action is c, not on the boundary."""
    c = np.array([0.5, -0.5])
    row = probe.probe_task(_ClosedFormCritic(lambda a: -float(np.sum((a - c) ** 2))),
                           "point_mass.easy", 0.3, 1, 0, 20, suboptimal="weak")
    assert row["grid_on_boundary"] == 0.0
    for s in row["per_state"]:
        assert s["grid_best"] == [0.5, -0.5] and math.isclose(s["grid_range"], 4.5)
        a_e = np.array(s["a_expert"])
        assert math.isclose(s["grid_cosine"], c @ a_e / (np.linalg.norm(c) * np.linalg.norm(a_e)),
                            rel_tol=1e-6)
