"""Fixtures shared by the whole suite."""

import os

import pytest
import torch

# Offscreen MuJoCo as pac.envs chooses it, whichever test imports MuJoCo first (a module that
# imports dm_control directly would otherwise fix the GL back-end to glfw for the session).
os.environ.setdefault("MUJOCO_GL", "egl")


@pytest.fixture
def one_thread():
    """Batch-1 and tiny-tensor work on one thread, as evaluation workers run it: faster and
    steadier on a shared 2-core machine. The thread count is restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def declared_tasks():
    """Restore the process's declared tasks (pac.tasks.TASKS) after a test whose params declare
    some, so that later tests see the declarations they load themselves."""
    from pac.tasks import TASKS

    saved = TASKS.declared
    yield
    TASKS.declare(saved)
