"""Offline evaluation (pac.evaluation.offline) against independent references: closed-form
returns, a categorical written out by hand, pandas' correlations, the serving path's own
batch-1 numbers, and the sampler never drawing a held-out episode."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # embodiment_helpers

from embodiment_helpers import DECLARATIONS, HIGH, LOW, write_params  # noqa: E402

from pac.evaluation.offline import (  # noqa: E402
    bin_log_likelihood,
    log_cell_width,
    mc_returns,
    missing_tail,
    pearson,
    spearman,
)

PARAMS = DECLARATIONS + """data:
  tokenizer_vocab: 96
  trajectory_length: 3
  groups: [{name: lab, tasks: [pick_red], source: real}]
"""
TINY = ["model.d_z=32", "model.num_blocks=1", "model.num_latents=8", "model.d_i=16",
        "model.num_heads=2", "model.num_action_bins=11", "model.num_value_bins=11"]


# --- returns, likelihoods, correlations -----------------------------------------------------------


def test_mc_returns_match_closed_forms_with_terminal_and_truncated_ends():
    gamma, c, n = 0.9, 0.5, 7
    terminal = np.ones(n)
    terminal[-1] = 0.0
    got = mc_returns(np.full(n, c), terminal, gamma)
    expected = [c * (1 - gamma ** (n - t)) / (1 - gamma) for t in range(n)]
    np.testing.assert_allclose(got, expected, rtol=1e-12)
    sparse = np.zeros(n)
    sparse[-1] = 1.0  # a success reward on the final frame of a terminated episode
    np.testing.assert_allclose(mc_returns(sparse, terminal, gamma),
                               [gamma ** (n - 1 - t) for t in range(n)], rtol=1e-12)
    # a discount 0 in the middle cuts the return there (a terminal step inside the record)
    cut = np.ones(n)
    cut[2] = 0.0
    np.testing.assert_allclose(mc_returns(np.ones(n), cut, gamma)[:3],
                               [1 + gamma + gamma**2, 1 + gamma, 1.0])
    # tails: nothing missing after a terminal end, gamma^(L-t) after a time limit
    np.testing.assert_array_equal(missing_tail(terminal, gamma), np.zeros(n))
    np.testing.assert_allclose(missing_tail(np.ones(n), gamma),
                               [gamma ** (n - t) for t in range(n)], rtol=1e-12)


def test_bin_log_likelihood_of_a_hand_set_categorical():
    # 5 bins at -1, -0.5, 0, 0.5, 1; two action dimensions
    logits = np.array([[[0.0, 1.0, 2.0, 3.0, 4.0], [2.0, 0.0, 0.0, 0.0, -1.0]]], np.float32)
    unit = np.array([[0.3, -2.0]], np.float32)  # 0.3 -> the 0.5 bin; -2 clips to -1
    got = bin_log_likelihood(logits, unit)
    lse0 = math.log(sum(math.exp(v) for v in [0, 1, 2, 3, 4]))
    lse1 = math.log(math.exp(2) + 3 * math.exp(0) + math.exp(-1))
    np.testing.assert_allclose(got, [[3.0 - lse0, 2.0 - lse1]], rtol=1e-6)
    # as a density in robot units: a gripper range [0, 0.085] over 5 bins has interior cells
    # 0.085 / 4 wide, the edge cell (the clipped -1) half of that
    width = log_cell_width(unit, 5, np.array([0.0, 0.0]), np.array([0.085, 0.085]))
    np.testing.assert_allclose(width, [[math.log(0.085 / 4), math.log(0.085 / 8)]], rtol=1e-6)


def test_pearson_and_spearman_equal_pandas_on_pairs_with_ties():
    rng = np.random.default_rng(3)
    x = np.round(rng.normal(size=60), 1)  # ties on purpose
    y = 0.4 * x + np.round(rng.normal(size=60), 1)
    sx, sy = pd.Series(x), pd.Series(y)
    assert pearson(x, y) == pytest.approx(sx.corr(sy, method="pearson"), rel=1e-12)
    assert spearman(x, y) == pytest.approx(sx.corr(sy, method="spearman"), rel=1e-12)
    assert math.isnan(pearson([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]))


# --- the held-out split ---------------------------------------------------------------------------


def _arm_episodes(markers: list[int], steps: int = 6, terminal: tuple[int, ...] = ()):
    """Arm episodes whose state's first value is their marker (which episode was drawn)."""
    from pac.data.store import Episode

    rng = np.random.default_rng(11)
    out = []
    for m in markers:
        proprio = rng.normal(size=(steps, 14)).astype(np.float32)
        proprio[:, 0] = m
        rewards, discounts = np.zeros(steps, np.float32), np.ones(steps, np.float32)
        if m in terminal:
            rewards[-1], discounts[-1] = 1.0, 0.0
        out.append(Episode(task="pick_red", proprio=proprio,
                           actions=rng.uniform(LOW, HIGH, (steps, 7)).astype(np.float32),
                           rewards=rewards, discounts=discounts, success=m in terminal,
                           source="real"))
    return out


def test_held_out_episodes_are_never_sampled(tmp_path, declared_tasks):
    from pac.config import load_config
    from pac.data import EpisodeStore, TaskTokenizer, store_root
    from pac.data.sampler import TrajectorySampler
    from pac.evaluation.offline import held_out_episodes

    params = write_params(tmp_path, PARAMS)
    cfg = load_config(params, [f"data.root={tmp_path}", "eval.offline_holdout=3"])
    store = EpisodeStore(store_root(tmp_path))
    store.append_episodes("lab", _arm_episodes([0, 1, 2, 3]))  # two shards: store order
    store.append_episodes("lab", _arm_episodes([4, 5, 6]))  # counts on across them
    held = held_out_episodes(store, ["lab"], "pick_red", 3)
    assert [float(s.proprio[int(s.index["start"].iloc[r]), 0]) for s, r in held] == [2.0, 5.0]
    TaskTokenizer.train(tmp_path / "spm.model", cfg.data.tokenizer_vocab)
    tok = TaskTokenizer.load(tmp_path / "spm.model", cfg.model.num_text_tokens)
    sampler = TrajectorySampler(cfg, store, tok)
    drawn = set()
    for step in range(40):  # 40 x 16 draws over 5 x 6 = 30 windows: every window, many times
        batch = sampler.batch_arrays(step, 16)
        drawn |= set(batch["proprio"][:, 0, 0].astype(int).tolist())
    assert drawn == {0, 1, 3, 4, 6}
    # without the split every episode is drawn
    cfg_all = load_config(params, [f"data.root={tmp_path}", "eval.offline_holdout=0"])
    everything = TrajectorySampler(cfg_all, store, tok).batch_arrays(0, 256)["proprio"][:, 0, 0]
    assert set(everything.astype(int).tolist()) == set(range(7))


def test_offline_holdout_of_one_is_refused(tmp_path, declared_tasks):
    from pac.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="eval.offline_holdout"):
        load_config(write_params(tmp_path, PARAMS), ["eval.offline_holdout=1"])


# --- the evaluation, end to end on a tiny real checkpoint -----------------------------------------


@pytest.fixture
def robot_checkpoint(tmp_path, declared_tasks, monkeypatch):
    """A tiny random PAC checkpoint trained (by params) with every 2nd episode held out, and a
    store of 4 arm episodes: markers 1 (terminated, success) and 3 (truncated) held out."""
    import torch

    from pac.checkpoint import save_inference_checkpoint
    from pac.config import load_config
    from pac.data import EpisodeStore, TaskTokenizer, store_root
    from pac.model import PerceiverActorCritic

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    params = write_params(tmp_path, PARAMS)
    overrides = [*TINY, f"data.root={tmp_path}", "eval.offline_holdout=2",
                 f"eval.out_dir={tmp_path / 'eval'}",
                 f"tracking.uri=sqlite:///{tmp_path / 'mlruns.db'}",
                 f"tracking.artifact_dir={tmp_path / 'artifacts'}"]
    cfg = load_config(params, overrides)
    EpisodeStore(store_root(tmp_path)).append_episodes(
        "lab", _arm_episodes([0, 1, 2, 3], steps=5, terminal=(0, 1, 2)))
    torch.manual_seed(0)
    model = PerceiverActorCritic(cfg.model)
    for name, p in model.named_parameters():  # non-uniform pi and Q
        if ".head." in name:
            p.data.add_(0.3 * torch.randn_like(p))
    TaskTokenizer.train(tmp_path / "spm.model", cfg.data.tokenizer_vocab)
    ckpt = save_inference_checkpoint(model, cfg, tmp_path / "policy", tmp_path / "spm.model")
    return cfg, ckpt, params, overrides


def test_offline_evaluation_matches_the_serving_path(robot_checkpoint, one_thread):
    import torch

    from pac.data import EpisodeStore, store_root
    from pac.evaluation.offline import evaluate_offline
    from pac.evaluation.rollout import PolicyServer
    from pac.model.distributions import log_prob
    from pac.tasks import to_unit
    from pac.tracking import client, list_artifacts

    cfg, ckpt, _, _ = robot_checkpoint
    result = evaluate_offline(cfg, ckpt)
    m = result.metrics["tasks"]["pick_red"]
    assert (m["episodes"], m["steps"]) == (2, 10)
    # the reference: batch-1 serving of each held-out step (markers 1 and 3)
    server = PolicyServer.load(ckpt)
    store = EpisodeStore(store_root(cfg.data.root))
    shard = store.shards[0]
    gamma = cfg.loss.gamma
    ll, err, q_ref, ret_ref = [], [], [], []
    low, high = np.array(LOW, np.float32), np.array(HIGH, np.float32)
    for row in (1, 3):
        start = int(shard.index["start"].iloc[row])
        for t in range(5):
            s, a = shard.proprio[start + t], shard.actions[start + t]
            obs = server.observation(s, "pick_red")
            with torch.inference_mode():
                logits = server.model.policy_logits(server.model.encode(obs))
            unit = torch.zeros(1, 7)
            unit[0] = torch.from_numpy(to_unit(a, low, high))
            ll.append(float(log_prob(logits, unit, torch.ones(1, 7, dtype=torch.bool))[0]))
            err.append(np.abs(server.act(s, "pick_red") - a))
            q_ref.append(server.q_values(s, "pick_red", a[None])[0][0])
            # closed form: marker 1 terminates with reward 1, marker 3 is truncated, reward 0
            ret_ref.append(gamma ** (4 - t) if row == 1 else 0.0)
    assert m["log_lik"] == pytest.approx(np.mean(ll), rel=1e-4)
    per_dim = np.mean(err, axis=0)
    got = [m["mae_argmax"][n] for n in ("j1", "j2", "j3", "j4", "j5", "j6", "gripper")]
    np.testing.assert_allclose(got, per_dim, rtol=1e-4, atol=1e-6)
    pairs = pd.read_csv(result.out_dir / "pairs.csv")
    np.testing.assert_allclose(pairs["q"], q_ref, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(pairs["return"], ret_ref, rtol=1e-6, atol=1e-9)
    # the truncated episode's steps miss gamma^(5-t) >= 0.77 of their tail: not compared
    assert pairs["compared"].tolist() == [True] * 5 + [False] * 5
    assert (m["pairs"], m["pairs_truncated"]) == (5, 5)
    kept = pairs[pairs["compared"]]
    assert m["q_pearson"] == pytest.approx(kept["q"].corr(kept["return"]), rel=1e-6)
    assert m["q_spearman"] == pytest.approx(
        kept["q"].corr(kept["return"], method="spearman"), rel=1e-6)
    assert (result.out_dir / "calibration.png").read_bytes()[:4] == b"\x89PNG"
    # MLflow: the run's metrics and files
    run = client(cfg).get_run(result.mlflow_run_id)
    assert run.data.metrics["offline/pick_red/log_lik"] == pytest.approx(m["log_lik"])
    assert "eval/offline/calibration.png" in list_artifacts(cfg, result.mlflow_run_id,
                                                            "eval/offline")


def test_pac_eval_routes_tasks_without_a_simulator_offline(robot_checkpoint, capsys, one_thread):
    from pac.cli import main

    cfg, ckpt, params, overrides = robot_checkpoint
    sets = [x for o in overrides for x in ("--set", o)]
    # the plain `pac eval` (no --offline) evaluates the robot task offline, refusing nothing
    assert main(["eval", "--params", str(params), *sets, "--checkpoint", str(ckpt),
                 "--no-track"]) == 0
    out = capsys.readouterr().out
    assert "Offline evaluation" in out and "pick_red" in out
    assert (Path(cfg.eval.out_dir) / "offline" / "offline.csv").is_file()
    # --offline on a simulator task: one line naming it
    assert main(["eval", "--params", str(params), *sets, "--checkpoint", str(ckpt),
                 "--offline", "--tasks", "reacher.easy_50hz", "--no-track"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "reacher.easy_50hz has a simulator" in err[0]


def test_pac_eval_help_describes_offline(capsys):
    from pac.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["eval", "--help"])
    assert exit_.value.code == 0
    assert "--offline" in capsys.readouterr().out


def test_scored_steps_with_a_camera_equal_batch_1_serving(tmp_path, declared_tasks, one_thread):
    """Held-out steps with camera images: the chunked scoring reads them as serving does."""
    import torch

    from pac.checkpoint import save_inference_checkpoint
    from pac.config import load_config
    from pac.data import TaskTokenizer
    from pac.evaluation.offline import score_steps
    from pac.evaluation.rollout import PolicyServer
    from pac.model import PerceiverActorCritic

    cfg = load_config(write_params(tmp_path, PARAMS), [*TINY, "model.num_images=1",
                                                       "model.resnet_channels=[4,4,4]"])
    torch.manual_seed(1)
    model = PerceiverActorCritic(cfg.model)
    for name, p in model.named_parameters():
        if ".head." in name:
            p.data.add_(0.3 * torch.randn_like(p))
    TaskTokenizer.train(tmp_path / "spm.model", cfg.data.tokenizer_vocab)
    server = PolicyServer.load(save_inference_checkpoint(model, cfg, tmp_path / "policy",
                                                         tmp_path / "spm.model"))
    rng = np.random.default_rng(5)
    proprio = rng.normal(size=(3, 14)).astype(np.float32)
    actions = rng.uniform(LOW, HIGH, (3, 7)).astype(np.float32)
    images = rng.integers(0, 255, (3, 1, 80, 80, 3), dtype=np.uint8)
    scores = score_steps(server, "pick_red", proprio, actions, images)
    q_ref = [server.q_values(proprio[t], "pick_red", actions[t][None], images=images[t])[0][0]
             for t in range(3)]
    np.testing.assert_allclose(scores.q, q_ref, rtol=1e-4, atol=1e-5)
    server.decode = "mean"
    mean_ref = np.stack([server.act(proprio[t], "pick_red", images[t]) for t in range(3)])
    np.testing.assert_allclose(scores.mean, mean_ref, rtol=1e-4, atol=1e-5)
