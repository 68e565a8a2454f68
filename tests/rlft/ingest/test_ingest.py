"""Robot-rollout ingestion: fuzz corpus, quarantine, dedup ledger, SIGKILL safety, DVC + MLflow."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from ingest_corpus import make_episode, write_corpus

from pac.data import EpisodeStore, store_root
from pac.rlft.ingest import (
    PAUSE_ENV,
    PROCESSED,
    QUARANTINE,
    Rejected,
    content_hash,
    ingest,
    read_ledger,
    read_rollout,
    write_rollout,
)

REPO = Path(__file__).resolve().parents[3]


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir()}


def _store(data_root: Path) -> EpisodeStore:
    return EpisodeStore(store_root(data_root), verify=True)


def test_rollout_file_roundtrip_is_plain_zip_of_npy(tmp_path):
    episode = make_episode(steps=9, seed=3, success=True)
    path = write_rollout(tmp_path / "ep.npz", episode, {"robot": "arm-7", "round": 2})
    back, meta = read_rollout(path)
    for name in ("proprio", "actions", "rewards", "discounts"):
        np.testing.assert_array_equal(getattr(back, name), getattr(episode, name))
    assert back.success and meta["robot"] == "arm-7" and meta["round"] == 2
    assert content_hash(back) == content_hash(episode)
    # any zip + .npy reader can read it: numpy's own npz loader, with pickles disabled
    with np.load(path, allow_pickle=False) as npz:
        np.testing.assert_array_equal(npz["actions"], episode.actions)
    assert set(zipfile.ZipFile(path).namelist()) == {
        "meta.json", "proprio.npy", "actions.npy", "rewards.npy", "discounts.npy"
    }
    assert not list(tmp_path.glob(".*")), "atomic write leaves no temp file"


def test_fuzz_corpus_every_bad_file_quarantined_every_good_one_ingested(tmp_path):
    landing, data_root = tmp_path / "landing", tmp_path / "data"
    expected = write_corpus(landing)
    bad = {name: code for name, code in expected.items() if code is not None}
    good = sorted(name for name, code in expected.items() if code is None)
    assert len(bad) >= 30
    before = _digests(landing)

    report = ingest(landing, data_root, round_k=3)

    print(f"\ncorpus: {len(expected)} files, {len(bad)} malformed, {len(good)} valid;"
          f" accepted {report.episodes_added}, rejected {len(report.rejected)}")
    assert sorted(report.accepted) == good
    assert set(report.rejected) == set(bad)
    quarantine = landing / QUARANTINE
    for name, code in bad.items():
        assert report.rejected[name].startswith(f"{code}: "), (name, report.rejected[name])
        reason = (quarantine / f"{name}.reason.txt").read_text()
        assert reason.startswith(f"{name}: {code}: ")
        # the original is moved, byte for byte, never modified
        assert hashlib.sha256((quarantine / name).read_bytes()).hexdigest() == before[name]
    for name in good:
        assert hashlib.sha256((landing / PROCESSED / name).read_bytes()).hexdigest() == before[name]
    assert sorted(p.name for p in landing.iterdir()) == [PROCESSED, QUARANTINE]

    store = _store(data_root)  # readable, checksums verified
    eps = store.episodes
    assert len(eps) == len(good) and set(eps["origin"]) == set(good)
    assert (eps["source"] == "rollout").all() and (eps["round"] == 3).all()
    assert set(eps["group"]) == {"rollouts"}
    assert eps["content_hash"].is_unique
    assert eps.set_index("origin").loc["valid_success_label_only.npz", "success"]
    assert set(read_ledger(store).values()) == set(good)

    again = ingest(landing, data_root, round_k=3)  # nothing left to do
    assert again.episodes_added == 0 and not again.rejected
    assert len(_store(data_root).episodes) == len(good)


def test_same_file_twice_adds_nothing(tmp_path):
    landing, data_root = tmp_path / "landing", tmp_path / "data"
    write_rollout(landing / "a.npz", make_episode(seed=1))
    write_rollout(landing / "b.npz", make_episode(seed=2))
    assert ingest(landing, data_root).episodes_added == 2
    # the robot delivers a.npz again, and b.npz once more under another name
    shutil.copy(landing / PROCESSED / "a.npz", landing / "a.npz")
    shutil.copy(landing / PROCESSED / "b.npz", landing / "b_resent.npz")
    report = ingest(landing, data_root)
    assert report.episodes_added == 0
    assert report.already == ["a.npz"]
    assert report.rejected["b_resent.npz"].startswith("duplicate: same content as b.npz")
    assert (landing / QUARANTINE / "b_resent.npz").is_file()
    assert (landing / PROCESSED / "a.npz.1").is_file()  # moved beside the first, not overwritten
    assert len(_store(data_root).episodes) == 2


def test_bad_landing_folder_fails_clearly(tmp_path):
    with pytest.raises(FileNotFoundError, match="landing folder .* does not exist"):
        ingest(tmp_path / "nope", tmp_path / "data")
    write_rollout(tmp_path / "landing" / "a.npz", make_episode())
    with pytest.raises(ValueError, match="invalid store group name '../x'"):
        ingest(tmp_path / "landing", tmp_path / "data", group="../x")
    assert (tmp_path / "landing" / "a.npz").is_file()  # checked before anything moved
    with pytest.raises(Rejected, match="unknown-task: task 'humanoid.fly' is not one of"):
        from pac.rlft.ingest import validate_episode

        validate_episode("humanoid.fly", np.zeros((3, 4)), np.zeros((3, 2)), np.zeros(3))


_INGEST = ("from pac.rlft.ingest import ingest; import sys;"
           " ingest(sys.argv[1], sys.argv[2], round_k=1)")


@pytest.mark.parametrize("stage", ["before_commit", "after_commit"])
def test_sigkill_during_ingest_then_rerun_loses_and_doubles_nothing(tmp_path, stage):
    landing, data_root = tmp_path / "landing", tmp_path / "data"
    expected = write_corpus(landing)
    good = sorted(n for n, c in expected.items() if c is None)
    # the store already holds an earlier batch: the rerun must keep it as it is
    write_rollout(tmp_path / "early" / "early.npz", make_episode(seed=77))
    ingest(tmp_path / "early", data_root)

    env = dict(os.environ, **{PAUSE_ENV: f"{stage}:120"})
    proc = subprocess.Popen([sys.executable, "-c", _INGEST, str(landing), str(data_root)],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == f"ingest: pausing at {stage}"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL

    # consistent right after the crash: the store is readable, originals are all still there
    eps = _store(data_root).episodes
    assert set(eps["origin"]) == ({"early.npz"} | (set(good) if stage == "after_commit" else set()))
    for name in good:
        assert (landing / name).is_file(), f"{name} must wait in the landing folder"

    report = ingest(landing, data_root, round_k=1)
    eps = _store(data_root).episodes
    print(f"\nkilled at {stage}: rerun committed {report.episodes_added},"
          f" found {len(report.already)} already committed; store holds {len(eps)} episodes")
    assert sorted(eps["origin"]) == sorted(["early.npz", *good])  # nothing lost or doubled
    assert eps["content_hash"].is_unique
    if stage == "after_commit":
        assert report.episodes_added == 0 and sorted(report.already) == good
    else:
        assert sorted(report.accepted) == good
    assert sorted(p.name for p in landing.iterdir()) == [PROCESSED, QUARANTINE]
    assert {p.name for p in (landing / PROCESSED).glob("*.npz")} == set(good)
    quarantined = {p.name for p in (landing / QUARANTINE).iterdir()}
    assert {n for n, c in expected.items() if c} <= quarantined


def test_pac_ingest_cli_logs_to_mlflow_and_dvc(tmp_path, monkeypatch):
    from dvc.repo import Repo

    from pac.cli import main
    from pac.config import load_config
    from pac.tracking import client, experiment_id

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    Repo.init(str(tmp_path), no_scm=True).close()
    landing, data_root = tmp_path / "landing", tmp_path / "data"
    for i in range(3):
        write_rollout(landing / f"ep{i}.npz", make_episode(seed=10 + i, success=i == 0))
    (landing / "broken.npz").write_bytes(b"PK\x03\x04 cut short")
    tracking = [f"tracking.uri=sqlite:///{tmp_path / 'mlruns.db'}",
                f"tracking.artifact_dir={tmp_path / 'artifacts'}"]
    args = ["ingest", str(landing), "--data-root", str(data_root), "--round", "2"]
    # exit 1: something was rejected (a robot-side script sees the failed delivery)
    assert main([*args, *sum((["--set", s] for s in tracking), [])]) == 1

    dvc_file = store_root(data_root) / "rollouts.dvc"
    assert dvc_file.is_file() and "md5:" in dvc_file.read_text()
    cfg = load_config(overrides=tracking)
    mlc = client(cfg)
    (run,) = mlc.search_runs([experiment_id(mlc, cfg)], "tags.`pac.stage` = 'ingest'")
    m = run.data.metrics
    assert m["ingest/episodes_added"] == 3 and m["ingest/rejected"] == 1
    assert m["ingest/rejected_truncated"] == 1
    assert m["ingest/success_rate"] == pytest.approx(100 / 3)
    assert run.data.params["ingest.round"] == "2"
    assert len(run.data.params["data_version.episodes_fingerprint"]) == 64
