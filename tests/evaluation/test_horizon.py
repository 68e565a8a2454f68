"""The evaluation horizon: each task runs over the episode length of its training data.

A real episode store is filled with real dm_control episodes of lengths that are not
``data.episode_steps``; a checkpoint records the store's horizons as ``pac train`` does; the
episodes actually rolled out (episodes.csv, written from the environment's own time steps) are
checked against the lengths the store was built with, and the reference returns against a
second computation of the random policy's return at that horizon.
"""

import csv
import json
from pathlib import Path

import mlflow
import numpy as np
import pytest
from eval_helpers import tiny_checkpoint

from pac.cli import main
from pac.config import ConfigError, load_config
from pac.data import task_horizons
from pac.data.store import Episode, EpisodeStore
from pac.envs import make_env
from pac.evaluation.evaluator import REFERENCE_SEED_OFFSET, episode_seed, evaluate
from pac.evaluation.rollout import random_policy, run_episode

#: the recordings' time limits per task: neither is data.episode_steps (100 by default)
LENGTHS = {"point_mass.easy": 30, "cartpole.balance": 40}


def _store(root: Path) -> EpisodeStore:
    """Real dm_control episodes: per task two at its time limit and one cut 7 steps earlier."""
    store = EpisodeStore(root)
    episodes = []
    for task, length in LENGTHS.items():
        for seed, steps in ((0, length), (1, length), (2, length - 7)):
            ep = run_episode(make_env(task, seed, steps), random_policy(task, seed), task)
            episodes.append(Episode(task, ep.observations[:-1], ep.actions, ep.rewards,
                                    ep.discounts))
    store.append_episodes("recorded", episodes)
    return store


@pytest.fixture(scope="module")
def recorded(tmp_path_factory) -> tuple[Path, EpisodeStore]:
    """The store and a checkpoint trained (here: initialised) on it, recording its horizons as
    ``pac train`` does."""
    root = tmp_path_factory.mktemp("horizon")
    store = _store(root / "episodes")
    return tiny_checkpoint(root, horizons=task_horizons(store)), store


def _cfg(out: Path, *extra: str):
    return load_config(overrides=["eval.episodes_per_task=2", "eval.workers=1",
                                  "eval.videos_per_task=0", f"eval.out_dir={out}", *extra])


def _episode_steps(out: Path) -> dict[str, set[int]]:
    with open(out / "episodes.csv") as fh:
        steps: dict[str, set[int]] = {}
        for r in csv.DictReader(fh):
            steps.setdefault(r["task"], set()).add(int(r["steps"]))
    return steps


def _random_return(task: str, seed: int, episodes: int, steps: int) -> float:
    """R_random computed again, outside the harness: fresh environments, the reference seeds."""
    base = seed + REFERENCE_SEED_OFFSET
    return float(np.mean([
        run_episode(make_env(task, s, steps), random_policy(task, s), task, steps).total_return
        for s in (episode_seed(base, task, i) for i in range(episodes))
    ]))


def test_store_horizon_is_the_longest_episode_per_task(recorded):
    _, store = recorded
    assert sorted(store.episodes["length"]) == sorted([23, 30, 30, 33, 40, 40])
    assert task_horizons(store) == LENGTHS  # the early-cut episode does not lower it
    assert task_horizons(store, ["recorded"]) == LENGTHS
    assert task_horizons(store, ["other"]) == {}


def test_policy_is_evaluated_over_its_data_horizon_and_mlflow_records_it(recorded, tmp_path):
    ckpt, _ = recorded
    cfg = _cfg(tmp_path / "eval", f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}",
               f"tracking.artifact_dir={tmp_path / 'artifacts'}")
    assert cfg.data.episode_steps not in LENGTHS.values()
    result = evaluate(cfg, ckpt, list(LENGTHS))
    assert _episode_steps(result.out_dir) == {t: {n} for t, n in LENGTHS.items()}
    rows = {r["name"]: r for r in result.rows if r["level"] == "task"}
    assert {t: rows[t]["horizon"] for t in LENGTHS} == LENGTHS
    assert next(r for r in result.rows if r["level"] == "all")["horizon"] == "30-40"
    assert result.metrics["horizon"] == LENGTHS
    assert "horizon cartpole.balance=40,point_mass.easy=30 steps" in result.table
    refs = json.loads((result.out_dir / "references.json").read_text())
    assert {k.split("|")[2] for k in refs} == {"steps=30", "steps=40"}
    params = mlflow.MlflowClient(cfg.tracking.uri).get_run(result.mlflow_run_id).data.params
    assert params["eval.horizon"] == "cartpole.balance=40,point_mass.easy=30"
    assert params["eval.horizon_source"] == "data"


def test_override_and_cache_per_horizon(recorded, tmp_path):
    ckpt, _ = recorded
    task, out = "point_mass.easy", tmp_path / "eval"
    from_data = evaluate(_cfg(out), ckpt, [task], track=False)
    override = evaluate(_cfg(out, "eval.max_steps=12"), ckpt, [task], track=False)
    assert _episode_steps(out) == {task: {12}}  # the override wins over the data
    assert override.rows[0]["horizon"] == 12 and from_data.rows[0]["horizon"] == 30
    # one cache file, one entry per horizon, each the random return at its own horizon
    refs = json.loads((out / "references.json").read_text())
    by_steps = {k.split("|")[2]: v["random"] for k, v in refs.items()}
    seed = _cfg(out).eval.seed
    assert by_steps["steps=30"] == pytest.approx(_random_return(task, seed, 2, 30), abs=1e-4)
    assert by_steps["steps=12"] == pytest.approx(_random_return(task, seed, 2, 12), abs=1e-4)
    assert from_data.rows[0]["random_return"] == pytest.approx(by_steps["steps=30"])
    assert override.rows[0]["random_return"] == pytest.approx(by_steps["steps=12"])
    # a task the data lacks (and any scripted policy) runs over data.episode_steps
    scripted = evaluate(_cfg(tmp_path / "r", "data.episode_steps=9"), tasks=[task],
                        policy="random", track=False)
    assert _episode_steps(scripted.out_dir) == {task: {9}}


@pytest.mark.parametrize("value", ["-5", "ten", "2.5"])
def test_a_bad_override_is_a_one_line_error(recorded, tmp_path, capsys, value):
    ckpt, _ = recorded
    with pytest.raises(ConfigError, match="eval.max_steps"):
        _cfg(tmp_path, f"eval.max_steps={value}")
    rc = main(["eval", "--checkpoint", str(ckpt), "--no-track", "--set",
               f"eval.out_dir={tmp_path / 'eval'}", "--set", f"eval.max_steps={value}"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "eval.max_steps" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "eval").exists()  # nothing ran, nothing written


def test_a_corrupt_horizons_file_is_a_one_line_error(recorded, tmp_path, capsys):
    ckpt, _ = recorded
    bad = tiny_checkpoint(tmp_path, horizons={"point_mass.easy": 30})
    (bad / "horizons.json").write_text('{"point_mass.easy": 0}')
    rc = main(["eval", "--checkpoint", str(bad), "--no-track", "--set",
               f"eval.out_dir={tmp_path / 'eval'}"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "horizons.json" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "eval").exists()


def test_rlft_rollouts_run_over_the_same_horizon(recorded, tmp_path):
    from pac.rlft.robot import sim_robot

    ckpt, _ = recorded
    robot = sim_robot(_cfg(tmp_path), ckpt, list(LENGTHS))
    for task, length in LENGTHS.items():
        zero = np.zeros(1 if task.startswith("cartpole") else 2)
        assert len(robot.run_episode(task, lambda p, im, z=zero: z, seed=0).rewards) == length
    override = sim_robot(_cfg(tmp_path, "eval.max_steps=5"), ckpt, ["point_mass.easy"])
    assert len(override.run_episode("point_mass.easy", lambda p, im: np.zeros(2), 0).rewards) == 5
