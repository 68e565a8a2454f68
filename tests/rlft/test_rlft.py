"""RLFT (§4.3): robot seam + collection, round config, Table-3 output, champion alias, the loop."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from pac.config import load_config
from pac.data import EpisodeStore, store_root
from pac.data.store import Episode
from pac.evaluation.stats import wilson_interval
from pac.rlft.ingest import ingest, read_rollout
from pac.rlft.robot import SimRobot, collect, rollout_seed
from pac.rlft.rounds import (
    CHAMPION,
    RoundRow,
    finetune_config,
    success_cell,
    table_csv,
    table_markdown,
)

TASK = "point_mass.easy"


def _tracking(tmp: Path) -> list[str]:
    return [f"tracking.uri=sqlite:///{tmp / 'mlruns.db'}",
            f"tracking.artifact_dir={tmp / 'artifacts'}"]


@pytest.fixture(scope="module")
def tiny_policy(tmp_path_factory) -> Path:
    """An untrained tiny PAC saved as an inference checkpoint (weights + config + tokenizer)."""
    import torch

    from pac.checkpoint import save_inference_checkpoint
    from pac.data import TaskTokenizer
    from pac.model import PerceiverActorCritic

    tmp = tmp_path_factory.mktemp("policy")
    cfg = load_config()
    TaskTokenizer.train(tmp / "spm.model", cfg.data.tokenizer_vocab, cfg.data.tokenizer_type)
    torch.manual_seed(0)
    return save_inference_checkpoint(PerceiverActorCritic(cfg.model), cfg, tmp / "policy",
                                     tmp / "spm.model")


@pytest.fixture(autouse=True)
def _own_tracking(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("USERNAME", "pac")


def test_sim_robot_rollouts_land_as_valid_files_and_ingest(tmp_path, tiny_policy):
    from pac.envs import flatten_observation, make_env
    from pac.evaluation.rollout import PolicyServer

    server = PolicyServer.load(tiny_policy)
    got = collect(server, SimRobot(episode_steps=20), [TASK], 3, tmp_path / "landing", round_k=2)
    print(f"\ncollected 3 episodes with the policy server at {got.policy_hz:.0f} Hz (batch 1)")
    assert len(got.files) == 3 and got.episodes == {TASK: 3}
    assert len(server.latencies) == 60  # one act() per control step, batch 1
    episode, meta = read_rollout(got.files[0])
    assert meta["round"] == 2 and meta["robot"] == "dm_control" and meta["decode"] == "argmax"
    assert episode.proprio.shape == (20, 4) and episode.actions.shape == (20, 2)
    first = make_env(TASK, meta["seed"], 20).reset().observation  # o_0 of the same seed
    np.testing.assert_allclose(episode.proprio[0], flatten_observation(first), rtol=1e-6)
    assert meta["seed"] == rollout_seed(2, TASK, 0)

    report = ingest(tmp_path / "landing", tmp_path / "data", round_k=2)
    assert report.episodes_added == 3
    eps = EpisodeStore(store_root(tmp_path / "data")).episodes
    assert (eps["round"] == 2).all() and (eps["source"] == "rollout").all()


class ScriptedArm:
    """A stand-in 'real robot' for the seam: its own control loop, state and reward."""

    name = "arm"

    def __init__(self) -> None:
        self.calls: list[tuple[int, ...]] = []

    def run_episode(self, task: str, act, seed: int) -> Episode:
        rng = np.random.default_rng(seed)
        state, states, actions = rng.uniform(-0.2, 0.2, 4).astype(np.float32), [], []
        for _ in range(8):
            action = act(state, None)
            self.calls.append(np.shape(action))
            states.append(state.copy())
            actions.append(action)
            state[:2] += 0.01 * action
        rewards = np.linspace(0, 1, 8, dtype=np.float32)
        return Episode(task, np.stack(states), np.stack(actions), rewards,
                       np.ones(8, np.float32), source="real")


def test_a_robot_plugs_in_through_the_robot_client_seam(tmp_path, tiny_policy):
    from pac.evaluation.rollout import PolicyServer

    arm = ScriptedArm()
    got = collect(PolicyServer.load(tiny_policy), arm, [TASK], 2, tmp_path / "landing")
    assert arm.calls == [(2,)] * 16
    assert [read_rollout(f)[1]["robot"] for f in got.files] == ["arm", "arm"]
    assert got.successes == {TASK: 2}  # reward 1 on the final step: the task's success window


def test_finetune_config_keeps_all_data_and_adds_the_rollout_group(tmp_path):
    cfg = load_config(overrides=["rlft.weight=2.0", "rlft.alpha=0.2", "rlft.beta=10",
                                 "rlft.finetune_steps=40", "train.warmup_steps=500"])
    ft = finetune_config(cfg, 3, tmp_path)
    assert [g.name for g in ft.data.groups] == [*(g.name for g in cfg.data.groups), "rollouts"]
    roll = ft.data.groups[-1]
    assert (roll.weight, roll.alpha, roll.beta, roll.source) == (2.0, 0.2, 10.0, "rollout")
    assert roll.tasks == cfg.rlft.tasks
    assert ft.train.steps == 40 and ft.train.warmup_steps == 0  # warm-up: a fraction of 40
    assert ft.train.out_dir == str(tmp_path / "rounds" / "round_3" / "train")
    assert ft.model == cfg.model and len(cfg.data.groups) == 3  # cfg itself is untouched
    # the rollouts' alpha, beta reach the loss (alpha-PAC); the pretraining groups keep loss.*
    from pac.config import group_alpha_beta
    from pac.losses import effective_alpha

    assert cfg.loss.variant == "pac" and ft.loss.variant == "alpha_pac"
    per_group = [group_alpha_beta(ft, g) for g in ft.data.groups]
    assert per_group == [(cfg.loss.alpha, cfg.loss.beta)] * 3 + [(0.2, 10.0)]
    batch_alpha = torch.tensor([a for a, _ in per_group])
    assert effective_alpha(ft.loss, 0, batch_alpha).tolist() == pytest.approx([0.75] * 3 + [0.2])
    assert effective_alpha(cfg.loss, 0, batch_alpha).tolist() == pytest.approx([0.75] * 4)


@pytest.mark.parametrize("override, expected", [
    ([], 1e-4),                      # the default: the pretraining's final rate, constant
    (["rlft.lr=3e-5"], 3e-5),
])
def test_finetuning_runs_at_a_constant_rate(tmp_path, override, expected):
    from pac.train.schedule import learning_rate

    cfg = load_config(overrides=["rlft.finetune_steps=40", *override])
    ft = finetune_config(cfg, 1, tmp_path)
    rates = [learning_rate(step, ft.train) for step in range(ft.train.steps)]
    assert rates == pytest.approx([expected] * 40, rel=1e-12)
    assert cfg.train.lr_peak == 1e-3  # the pretraining schedule itself is untouched


def test_finetuning_with_rlft_lr_null_repeats_the_pretraining_schedule(tmp_path):
    from pac.config import ConfigError
    from pac.train.schedule import learning_rate

    cfg = load_config(overrides=["rlft.finetune_steps=40", "rlft.lr=null"])
    rates = [learning_rate(step, finetune_config(cfg, 1, tmp_path).train) for step in range(40)]
    t = cfg.train  # warm-up over 5% of the 40 updates (2), then cosine from lr_peak to lr_end
    assert rates[0] == pytest.approx(t.lr_init) and rates[2] == pytest.approx(t.lr_peak)
    assert rates[-1] == pytest.approx(t.lr_end + (t.lr_peak - t.lr_end) * 0.5 * (
        1 + math.cos(math.pi * 37 / 38)), rel=1e-9)
    with pytest.raises(ConfigError, match="rlft.lr"):
        load_config(overrides=["rlft.lr=-1e-4"])


def _row(k: int, successes: int, n: int = 20, champion: bool = False) -> RoundRow:
    cell = success_cell(successes, n)
    return RoundRow(round=k, episodes_added=10 if k else 80, rollout_episodes=10 * k,
                    collected_success=math.nan if k == 0 else 0.3, tasks={TASK: cell},
                    overall=cell, policy=f"round_{k}", champion=champion)


def test_round_table_has_wilson_intervals_in_table3_layout():
    cfg = load_config()
    rows = [_row(0, 5, champion=True), _row(1, 9), _row(2, 14, champion=True)]
    md = table_markdown(rows, cfg)
    low, high = wilson_interval(9, 20)
    assert f"| RLFT #1 | + 10 | 45.0 [{100 * low:.1f}, {100 * high:.1f}] |" in md
    assert "| PAC (pretrained) * | 80 |" in md and "| RLFT #2 * | + 10 |" in md
    table = list(csv.DictReader(io.StringIO(table_csv(rows))))
    assert [r["round"] for r in table] == ["0", "1", "2"]
    assert float(table[2]["all_success"]) == 70.0 and table[2]["all_n"] == "20"
    assert float(table[1]["point_mass.easy_low"]) == pytest.approx(100 * low, abs=0.01)
    assert table[0]["collected_success"] == "" and table[1]["collected_success"] == "30.00"


def test_champion_alias_moves_only_when_beaten(tmp_path, tiny_policy):
    from pac.rlft.rounds import _update_champion
    from pac.tracking import Tracker, model_alias

    cfg = load_config(overrides=_tracking(tmp_path))
    run = Tracker(cfg, "rlft-round-0")
    uri = run.log_policy(tiny_policy)
    rows, moved = [], []
    for k, s in enumerate([10, 8, 10, 13, 19]):
        row = _row(k, s)
        row.champion = _update_champion(cfg, run, tiny_policy, uri, row, rows)
        moved.append(row.champion)
        rows.append(row)
    # a tie and 13/20 against 10/20 (z = 0.96, inside the noise) do not move it; 19/20 does
    assert moved == [True, False, False, False, True]
    champ = model_alias(cfg, CHAMPION)
    assert champ["version"] == "5" and champ["tags"]["success_rate"] == "95.0000"
    assert champ["tags"]["rlft_round"] == "4"
    # z = (0.95 - 0.5) / sqrt(0.725 * 0.275 * (1/20 + 1/20)) = 3.187, by hand
    assert "19/20 vs v1 10/20: z = 3.19, one-sided p = 0.001 < 0.05" in \
        champ["tags"]["pac.champion_decision"]
    assert [r.model_version for r in rows] == ["1", "2", "3", "4", "5"]  # every round registered


@pytest.mark.slow
def test_rlft_rounds_end_to_end_with_resume(tmp_path):
    """Tiny budgets: a pretrained policy, one round, then --resume for a second one."""
    from pac.checkpoint import save_inference_checkpoint
    from pac.data import TaskTokenizer, tokenizer_path
    from pac.data.generate import generate_group
    from pac.model import PerceiverActorCritic
    from pac.rlft.rounds import rlft
    from pac.tracking import client, experiment_id, model_alias

    data = tmp_path / "data"
    cfg = load_config(overrides=[
        f"data.root={data}", "data.episode_steps=20",
        "data.groups=[{name: low_quality, tasks: [point_mass.easy], quality: 0.3,"
        " episodes_per_task: 6}]",
        "data.trajectory_length=3", "train.global_batch=4", "loss.num_action_samples=2",
        "rlft.episodes_per_task=3", "rlft.finetune_steps=2", f"rlft.out_dir={tmp_path / 'rlft'}",
        "eval.episodes_per_task=3", "eval.workers=1", "eval.videos_per_task=0",
        f"eval.out_dir={tmp_path / 'eval'}", *_tracking(tmp_path),
    ])
    generate_group(cfg, "low_quality", store_root(data), workers=1, progress=False)
    TaskTokenizer.train(tokenizer_path(data), cfg.data.tokenizer_vocab, cfg.data.tokenizer_type)
    pretrained = save_inference_checkpoint(PerceiverActorCritic(cfg.model), cfg,
                                           tmp_path / "pretrained", tokenizer_path(data))

    first = rlft(cfg, pretrained, rounds=1)
    with pytest.raises(Exception, match="pass --resume"):
        rlft(cfg, pretrained, rounds=2)
    result = rlft(cfg, pretrained, rounds=2, resume=True)
    print("\n" + result.table)

    assert [r.round for r in result.rows] == [0, 1, 2]
    assert result.rows[1].run_id == first.rows[1].run_id  # round 1 kept, not redone
    assert [r.episodes_added for r in result.rows] == [6, 3, 3]
    eps = EpisodeStore(store_root(data), verify=True).episodes
    roll = eps[eps["group"] == "rollouts"]
    assert sorted(roll["round"]) == [1, 1, 1, 2, 2, 2] and roll["content_hash"].is_unique
    assert (eps["group"] == "low_quality").sum() == 6  # earlier data kept
    assert result.policy == tmp_path / "rlft" / "rounds" / "round_2" / "train" / "policy"
    assert (tmp_path / "rlft" / "rounds.csv").read_text().count("\n") == 4
    mlc = client(cfg)
    runs = mlc.search_runs([experiment_id(mlc, cfg)], "tags.`pac.stage` = 'rlft'")
    rounds = {r.info.run_name: r for r in runs if r.info.run_name.startswith("rlft-round-")}
    assert set(rounds) == {"rlft-round-0", "rlft-round-1", "rlft-round-2"}
    assert result.run_id == first.run_id  # --resume continues the same MLflow parent run
    assert mlc.get_run(result.run_id).data.params["rlft.decode"] == "argmax"
    assert "rollouts per task (decode=argmax)" in result.table
    for r in rounds.values():
        assert r.data.tags["mlflow.parentRunId"] == result.run_id
        assert "success_rate" in r.data.metrics
    champ = model_alias(cfg, CHAMPION)
    best = result.rows[0]  # the rule written out: a round replaces only when z > 1.6449
    for row in result.rows[1:]:
        (s1, n1), (s0, n0) = ((int(r.overall["successes"]), int(r.overall["episodes"]))
                              for r in (row, best))
        pooled = (s1 + s0) / (n1 + n0)
        var = pooled * (1 - pooled) * (1 / n1 + 1 / n0)
        if var > 0 and (s1 / n1 - s0 / n0) / math.sqrt(var) > 1.6448536269514722:
            best = row
    assert champ is not None and champ["tags"]["rlft_round"] == str(best.round)
