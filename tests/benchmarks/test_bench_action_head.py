"""benchmarks/bench_action_head.py: decodings, fit probe, velocity gain, scores, one tiny run.

Independent references: the decodings of a hand-written categorical against their closed forms
(mode, expectation, median of three-point distributions); the fit probe of a constant predictor
against the mean |a| of the expert actions it is given; the velocity gain of linear policies
against their coefficients; the scores of three hand-made episodes
against the % of expert formula, the standard-error interval and the edge-step count written out
here; the tiny run end to end on real dm_control physics and a real checkpoint.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from eval_helpers import tiny_checkpoint

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("bench_action_head",
                                               ROOT / "benchmarks/bench_action_head.py")
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


def _logits(*masses: dict[int, float]) -> torch.Tensor:
    """Logits of per-dimension categoricals with the given {bin: probability} (others ~0)."""
    probs = torch.full((len(masses), bench.NUM_BINS), 1e-12)
    for d, mass in enumerate(masses):
        for k, p in mass.items():
            probs[d, k] = p
    return probs.log().reshape(-1)


def test_decodings_against_closed_forms():
    step = 2.0 / (bench.NUM_BINS - 1)  # bin k sits at -1 + k * step
    out = _logits({10: 0.3, 50: 0.2, 100: 0.5}, {0: 0.6, 60: 0.4})
    argmax = bench.decode(out, "categorical", "argmax", 2)
    mean = bench.decode(out, "categorical", "mean", 2)
    median = bench.decode(out, "categorical", "median", 2)
    centre = lambda k: -1.0 + k * step  # noqa: E731
    np.testing.assert_allclose(argmax, [centre(100), centre(0)], atol=1e-6)
    np.testing.assert_allclose(
        mean, [0.3 * centre(10) + 0.2 * centre(50) + 0.5 * centre(100),
               0.6 * centre(0) + 0.4 * centre(60)], atol=1e-5)
    # median: the first bin whose cumulative mass reaches 1/2 (0.3 + 0.2 at bin 50; 0.6 at bin 0)
    np.testing.assert_allclose(median, [centre(50), centre(0)], atol=1e-6)
    reg = bench.decode(torch.tensor([0.25, -3.0]), "regression", "-", 2)
    np.testing.assert_allclose(reg, [0.25, -1.0])  # clipped to the action range


def test_fit_error_of_a_constant_predictor():
    actions = np.array([[0.1, -0.1], [0.5, 0.0], [-0.3, 0.25], [0.0, 0.05]], np.float32)
    raw = np.zeros((4, 6), np.float32)
    fit = bench.fit_error(lambda obs: np.zeros(2, np.float32), raw, actions)
    assert fit["error"] == pytest.approx(np.mean([0.1, 0.25, 0.275, 0.025]))
    # rows 1 and 2 have some |a| > 0.2: the reaching phase
    assert fit["reaching_fraction"] == pytest.approx(0.5)
    assert fit["error_reaching"] == pytest.approx(np.mean([0.25, 0.275]))
    assert fit["away_reaching"] == 0.0  # a zero prediction has cosine 0: never pointing away
    flipped = bench.fit_error(lambda obs: np.array([-0.5, -0.5]), raw[:1], np.array([[0.5, 0.5]]))
    assert flipped["away_reaching"] == 1.0 and flipped["error"] == pytest.approx(1.0)


def test_tiny_run_end_to_end(tmp_path, capsys):
    ckpt = tiny_checkpoint(tmp_path, "model.num_action_bins=101")
    out = tmp_path / "head.json"
    bench.main(["--task", "reacher.easy", "--episodes", "2", "--episode-steps", "30",
                "--steps", "5", "--batch", "8", "--eval-episodes", "2", "--held-out", "1",
                "--action-noise", "0.1", "--decodes", "argmax", "mean", "--smoothing", "0", "0.2",
                "--networks", "mlp", "perceiver", "--proprio-tokens", "scalar", "joint",
                "--checkpoint", str(ckpt), "--out", str(out)])
    printed = capsys.readouterr().out
    result = json.loads(out.read_text())
    assert result["transitions"] == 2 * 30
    arms = [(r["network"], r["head"], r["smoothing"], r["decode"]) for r in result["rows"]]
    per_network = [("regression", 0.0, "-"), ("categorical", 0.0, "argmax"),
                   ("categorical", 0.0, "mean"), ("categorical", 0.2, "argmax"),
                   ("categorical", 0.2, "mean")]
    assert arms == [(n, *arm) for n in ("mlp", "perceiver/scalar", "perceiver/joint")
                    for arm in per_network]
    expert, random = result["expert_return"], result["random_return"]
    for row in [*result["rows"], result["checkpoint"]]:
        assert 0.0 <= row["success"] <= 100.0 and row["error"] >= 0.0
        assert row["pct_expert"] == pytest.approx(
            100.0 * (row["mean_return"] - random) / (expert - random))
    assert "| mlp | regression | 0 | - |" in printed and "checkpoint" in printed
    assert "60 expert transitions (action noise 0.1)" in printed
    assert "| perceiver/joint | categorical | 0.2 | mean |" in printed


def test_score_against_the_formulas():
    from types import SimpleNamespace as Ep

    edge = np.array([[1.0, 0.0], [0.2, -0.1], [0.0, -0.99], [0.5, 0.5]], np.float32)
    calm = np.zeros((4, 2), np.float32)
    episodes = [Ep(total_return=10.0, success=False, actions=edge),
                Ep(total_return=30.0, success=True, actions=calm),
                Ep(total_return=20.0, success=False, actions=calm)]
    row = bench.score(episodes, expert=50.0, random=10.0)
    pct = np.array([0.0, 50.0, 25.0])  # 100 (R - 10) / (50 - 10)
    half = 1.959963984540054 * pct.std(ddof=1) / np.sqrt(3)
    assert row["pct_expert"] == pytest.approx(25.0) and row["mean_return"] == pytest.approx(20.0)
    assert row["pct_low"] == pytest.approx(25.0 - half)
    assert row["pct_high"] == pytest.approx(25.0 + half)
    assert row["success"] == pytest.approx(100 / 3)
    assert row["edge_failed"] == pytest.approx(2 / 8)  # failed episodes: 2 of their 8 steps at +-1


def test_velocity_gain_of_linear_policies():
    rng = np.random.default_rng(0)
    raw = rng.normal(size=(7, 6)).astype(np.float32)  # reacher: position, to_target, velocity
    braking = bench.velocity_gain(lambda x: np.array([-0.2 * x[4], 0.3 * x[5] + x[0]]), raw)
    assert braking == pytest.approx([-0.2, 0.3], abs=1e-6)
    # a policy of the position and the target alone has no velocity gain
    blind = bench.velocity_gain(lambda x: np.array([x[0] + x[2], x[1] * x[3]]), raw)
    assert blind == pytest.approx([0.0, 0.0], abs=1e-6)
    # the cross term: joint 0's action reading joint 1's velocity is not joint 0's gain
    cross = bench.velocity_gain(lambda x: np.array([x[5], x[4]]), raw)
    assert cross == pytest.approx([0.0, 0.0], abs=1e-6)


def test_perceiver_arms_are_the_pac_model_with_the_chosen_tokens():
    x = np.random.default_rng(0).normal(size=(8, 8)).astype(np.float32)
    y = np.zeros((8, 2), np.float32)
    for tokens, joint in (("scalar", False), ("joint", True)):
        net = bench.train_bc(x, y, "categorical", 0.0, 0, 4, 0, f"perceiver/{tokens}")
        assert (net.model.proprio_encoder.joint is not None) == joint
        assert net(torch.tensor(x)).shape == (8, 2 * bench.NUM_BINS)
    reg = bench.train_bc(x, y, "regression", 0.0, 0, 4, 0, "perceiver/joint")
    assert reg(torch.tensor(x)).shape == (8, 2)
