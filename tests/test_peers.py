"""The offline-RL peers' dataset (benchmarks/peers_d3rlpy.py): store episodes -> d3rlpy arrays.

The converted arrays are read back with d3rlpy 2.8.1's documented rules (episodes end where
terminals or timeouts is 1; a terminated episode has one transition per row, its last one
terminal; a timed-out episode one fewer, its last row only a next observation) and compared with
the transitions taken directly from the Episode objects written to a real store. Needs neither
d3rlpy nor the network; where d3rlpy is importable, its own MDPDataset is checked as well.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

from pac.data.store import Episode, EpisodeStore

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "peers_d3rlpy.py"
_SPEC = importlib.util.spec_from_file_location("peers_d3rlpy", _PATH)
peers = importlib.util.module_from_spec(_SPEC)
sys.modules.setdefault("peers_d3rlpy", peers)  # its dataclasses look their module up
_SPEC.loader.exec_module(peers)

TASK = "point_mass.easy"


def _episode(rng, length, task=TASK, width=(4, 2), terminated=False, final=False, discounts=None):
    disc = np.ones(length, np.float32) if discounts is None else np.asarray(discounts, np.float32)
    if terminated:
        disc[-1] = 0.0
    return Episode(
        task=task, proprio=rng.normal(size=(length, width[0])).astype(np.float32),
        actions=rng.uniform(-1, 1, (length, width[1])).astype(np.float32),
        rewards=rng.uniform(0, 1, length).astype(np.float32), discounts=disc,
        final_proprio=rng.normal(size=width[0]).astype(np.float32) if final else None,
    )


def _truth(episodes):
    """(o, a, r, o' or None when terminal, terminal) of every bootstrappable step, in order."""
    out = []
    for ep in episodes:
        if ep.task != TASK:
            continue
        length = len(ep.rewards)
        for t in range(length):
            if t < length - 1:
                nxt = ep.proprio[t + 1]
            elif ep.terminated:
                nxt = None
            elif ep.final_proprio is not None:
                nxt = ep.final_proprio
            else:
                continue  # truncated and o_L unknown: no next observation
            out.append((ep.proprio[t], ep.actions[t], ep.rewards[t], nxt, t == length - 1
                        and ep.terminated))
    return out


def _read_back(d):
    """The flat arrays' transitions by d3rlpy's rules (EpisodeGenerator, BasicTransitionPicker)."""
    out, start = [], 0
    for end in np.flatnonzero((d.terminals > 0) | (d.timeouts > 0)) + 1:
        terminated = bool(d.terminals[end - 1])
        count = end - start if terminated else end - start - 1
        for j in range(count):
            row = start + j
            last = terminated and j == count - 1
            out.append((d.observations[row], d.actions[row], d.rewards[row],
                        None if last else d.observations[row + 1], last))
        start = end
    assert start == len(d.rewards), "rows after the last episode end"
    return out


def _assert_same(got, want):
    assert len(got) == len(want)
    for (o, a, r, n, term), (o2, a2, r2, n2, term2) in zip(got, want):
        np.testing.assert_array_equal(o, o2)
        np.testing.assert_array_equal(a, a2)
        assert float(r) == float(r2) and bool(term) == bool(term2)
        assert (n is None) == (n2 is None)
        if n is not None:
            np.testing.assert_array_equal(n, n2)


@pytest.fixture
def written(tmp_path):
    rng = np.random.default_rng(0)
    episodes = [
        _episode(rng, 3, final=True),  # truncated, o_L known: 3 transitions
        _episode(rng, 2, terminated=True),  # terminated: 2, the last one terminal
        _episode(rng, 3),  # truncated, o_L unknown: 2
        _episode(rng, 1),  # truncated after one step, o_L unknown: none
        _episode(rng, 4, task="reacher.easy", width=(6, 2), final=True),  # another task
        _episode(rng, 2, final=True),
    ]
    store = EpisodeStore(tmp_path / "episodes")
    store.append_episodes("low_quality", episodes)
    return EpisodeStore(tmp_path / "episodes"), episodes  # reopened: what a reader sees


def test_transitions_match_the_store_episodes(written):
    store, episodes = written
    d = peers.task_dataset(store, TASK)
    truth = _truth(episodes)
    _assert_same(_read_back(d), truth)
    assert (d.transitions, d.dropped, d.episodes) == (len(truth), 2, 4)
    assert d.terminals.sum() == 1 and d.timeouts.sum() == 3
    assert d.observations.shape == (3 + 1 + 2 + 3 + 2 + 1, 4)  # two o_L rows


def test_d3rlpy_reads_the_same_transitions(written):
    d3rlpy = pytest.importorskip("d3rlpy")  # only with PYTHONPATH=benchmarks/.peers
    store, episodes = written
    d = peers.task_dataset(store, TASK)
    dataset = d3rlpy.dataset.MDPDataset(d.observations, d.actions, d.rewards, d.terminals,
                                        d.timeouts)
    got = []
    for ep in dataset.episodes:
        for j in range(ep.transition_count):
            t = dataset.transition_picker(ep, j)
            got.append((t.observation, t.action, t.reward[0],
                        None if t.terminal else t.next_observation, t.terminal))
    _assert_same(got, _truth(episodes))


def test_unrepresentable_discounts_and_missing_tasks_are_rejected(tmp_path):
    rng = np.random.default_rng(1)
    store = EpisodeStore(tmp_path / "episodes")
    store.append_episodes("g", [_episode(rng, 3, discounts=[1.0, 0.5, 1.0])])
    with pytest.raises(ValueError, match="discounts must be 1 before the last step"):
        peers.task_dataset(store, TASK)
    with pytest.raises(ValueError, match="no episodes of task 'reacher.easy'"):
        peers.task_dataset(store, "reacher.easy")


def test_missing_d3rlpy_names_its_environment_script():
    if importlib.util.find_spec("d3rlpy") is not None:
        pytest.skip("d3rlpy is importable here")
    with pytest.raises(peers.PeersUnavailable, match="benchmarks/peers_env.sh"):
        peers.import_d3rlpy()
