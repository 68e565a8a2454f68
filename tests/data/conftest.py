"""Fixtures of the data tests: a small synthetic episode store (no simulation)."""

import numpy as np
import pytest
from data_helpers import synthetic_episode

from pac.data.store import EpisodeStore


@pytest.fixture
def small_store(tmp_path) -> EpisodeStore:
    """Three groups: 'a' (two tasks), 'b' (one task), 'c' (one task, half successful)."""
    rng = np.random.default_rng(0)
    store = EpisodeStore(tmp_path / "episodes")
    store.append_episodes("a", [synthetic_episode("point_mass.easy", 12, rng, True)
                                for _ in range(5)]
                          + [synthetic_episode("reacher.easy", 9, rng, True) for _ in range(4)])
    store.append_episodes("b", [synthetic_episode("cartpole.balance", 20, rng) for _ in range(3)])
    store.append_episodes("c", [synthetic_episode("point_mass.easy", 7, rng, i % 2 == 0)
                                for i in range(6)])
    return store
