"""train.threads (pac.train.threads): the cores other processes leave free, measured for real."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from pac.config import ConfigError, load_config
from pac.train.threads import auto_threads, busy_cores, training_threads


@pytest.mark.parametrize("cores, busy, want", [
    (2, 0.0, 2), (2, 0.3, 2), (2, 0.6, 1), (2, 1.0, 1), (2, 2.0, 1), (2, 5.0, 1),
    (8, 2.6, 5), (8, 0.0, 8), (4, None, 4),
])
def test_auto_threads_are_the_free_cores_rounded(cores, busy, want):
    assert auto_threads(cores, busy) == want


def test_a_busy_process_is_measured_as_one_busy_core():
    idle = busy_cores(0.5)
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        import time

        time.sleep(0.3)  # the interpreter is up and spinning
        busy = busy_cores(0.5)
    finally:
        hog.kill()
        hog.wait()
    assert idle is not None and busy is not None
    assert busy - idle > 0.6, (idle, busy)  # one core's worth more, less scheduling noise


def test_setting_resume_and_multi_rank_rules():
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert training_threads(3, 1, True, None) == 3  # given: as given
        assert training_threads(0, 1, True, 1) == 1  # a resumed auto run keeps its count
        assert training_threads(0, 2, True, None) == 2  # multi-rank: torch's count
        assert training_threads(0, 1, False, None) == 2  # GPU: torch's count
        torch.set_num_threads(1)
        assert training_threads(0, 1, True, None) == 1  # never more than the process's count
    finally:
        torch.set_num_threads(before)
    with pytest.raises(ConfigError, match=r"^train\.threads=-1 is outside"):
        load_config(overrides=["train.threads=-1"])
