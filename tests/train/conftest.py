"""One tiny generated dataset (real dm_control episodes + SentencePiece) for all training tests."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from pac.config import PACConfig, load_config

#: A small mixture of the default tasks: two groups of graded quality (App. C.4).
DATA_OVERRIDES = [
    "data.episode_steps=25",
    "data.groups=[{name: expert, tasks: [point_mass.easy, cartpole.balance], quality: 1.0,"
    " episodes_per_task: 4, alpha: 0.75, beta: 38.0},"
    " {name: noisy, tasks: [point_mass.easy], quality: 0.3, episodes_per_task: 4,"
    " alpha: 0.75, beta: 38.0}]",  # = loss.alpha, beta: per-group values need alpha_pac
]
#: The tiny preset (params/default.yaml) trained for a few dozen small updates.
TRAIN_OVERRIDES = [
    "train.steps=20",
    "train.global_batch=4",
    "data.trajectory_length=3",
    "train.log_every=5",
    "train.checkpoint_every=10",
    "train.warmup_steps=3",
    "train.lr_peak=3.0e-3",
    "train.lr_end=1.0e-3",
    "loss.target_update_period=10",
    "loss.num_action_samples=4",
    # fp32 pinned: `auto` picks bf16 on CPUs with native bf16 (AMX), and the exact-resume and
    # parity tests compare against fp32 runs (docs/faults_and_resume.md, "Exact resume")
    "train.precision=fp32",
]


#: Session values shared by every folder whose conftest re-exports these fixtures (tests/faults):
#: each re-export is its own fixture for pytest, but the data and the reference run are made once.
_ONCE: dict[str, object] = {}


def _once(name: str, make):
    if name not in _ONCE:
        _ONCE[name] = make()
    return _ONCE[name]


@pytest.fixture(scope="session")
def data_root(tmp_path_factory) -> Path:
    """data/episodes + data/tokenizer/spm.model for DATA_OVERRIDES, generated once."""
    return _once("data_root", lambda: _make_data(tmp_path_factory))


def _make_data(tmp_path_factory) -> Path:
    from pac.data import TaskTokenizer, store_root, tokenizer_path
    from pac.data.generate import generate_group

    root = tmp_path_factory.mktemp("data")
    cfg = load_config(overrides=DATA_OVERRIDES)
    for group in cfg.data.groups:
        generate_group(cfg, group.name, store_root(root), workers=1, progress=False)
    TaskTokenizer.train(tokenizer_path(root), cfg.data.tokenizer_vocab,
                        cfg.data.tokenizer_type, num_tokens=cfg.model.num_text_tokens)
    return root


@pytest.fixture(scope="session")
def mlflow_root(tmp_path_factory) -> Path:
    """One sqlite MLflow store for every training test (creating a store costs seconds)."""
    return _once("mlflow_root", lambda: tmp_path_factory.mktemp("mlruns"))


def train_overrides(run_dir: Path, mlflow_root: Path, *extra: str) -> list[str]:
    """Overrides for a test run writing to `run_dir` and logging to the shared MLflow store."""
    return [
        *DATA_OVERRIDES,
        *TRAIN_OVERRIDES,
        f"train.out_dir={run_dir}",
        f"tracking.uri=sqlite:///{mlflow_root / 'mlflow.db'}",
        f"tracking.artifact_dir={mlflow_root / 'artifacts'}",
        *extra,
    ]


def train_config(run_dir: Path, mlflow_root: Path, *extra: str) -> PACConfig:
    return load_config(overrides=train_overrides(run_dir, mlflow_root, *extra))


LAUNCH_ENV = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def clean_env() -> dict[str, str]:
    """This process's environment without the rendezvous variables an in-process run set."""
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_ENV}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    env["OMP_NUM_THREADS"] = str(TRAIN_THREADS)  # the in-process runs' count (exact resume)
    return env


@pytest.fixture(scope="session")
def reference_run(data_root, mlflow_root, tmp_path_factory):
    """ZeRO-0, one rank, 20 updates: also the uninterrupted run of the resume test."""
    def make():
        import torch

        from pac.train import train

        cfg = train_config(tmp_path_factory.mktemp("reference") / "run", mlflow_root)
        threads = torch.get_num_threads()
        torch.set_num_threads(TRAIN_THREADS)
        try:
            return cfg, train(cfg, data_root=data_root)
        finally:
            torch.set_num_threads(threads)

    return _once("reference_run", make)


#: Every training run of these tests, in-process or in a subprocess (clean_env), uses this many
#: intra-op threads: bit-exact resume needs one count (docs/faults_and_resume.md, "Exact resume"),
#: whatever the tests before these left torch at.
TRAIN_THREADS = 1


@pytest.fixture(autouse=True)
def _train_threads():
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(TRAIN_THREADS)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _no_tracking_env(monkeypatch):
    """Each test's params decide its MLflow store."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("USERNAME", os.environ.get("USERNAME", "pac"))
