"""Helpers for the data tests: params written on the fly, synthetic episodes (no simulation)."""

import numpy as np

from pac.config import load_config
from pac.data.store import Episode
from pac.tasks import TASKS


def make_cfg(groups: str, *extra: str):
    """A config from params/default.yaml with `data.groups` given as a YAML flow list."""
    return load_config(overrides=[f"data.groups={groups}", *extra])


def synthetic_episode(task: str, length: int, rng: np.random.Generator, success: bool = False,
                      cameras: int = 0, **kw) -> Episode:
    spec = TASKS[task]
    return Episode(
        task=task,
        proprio=rng.normal(size=(length, spec.num_proprio)).astype(np.float32),
        actions=rng.uniform(-1, 1, (length, spec.num_actions)).astype(np.float32),
        rewards=rng.uniform(0, 1, length).astype(np.float32),
        discounts=np.ones(length, np.float32),
        success=success,
        images=rng.integers(0, 255, (length, cameras, 80, 80, 3), dtype=np.uint8)
        if cameras else None,
        **kw,
    )
