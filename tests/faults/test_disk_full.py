"""A full disk (ENOSPC) loses nothing: every byte of pac.io's atomic writers goes through
`pac.io.write_chunk`, which these tests replace by one that raises ENOSPC."""

from __future__ import annotations

import errno
import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from train.conftest import train_config, train_overrides

import pac.io
from pac.cli import main
from pac.data import Episode, EpisodeStore, StoreError
from pac.train import train
from pac.train.checkpoints import MANIFEST, verify


def _tree(root: Path) -> dict[str, str]:
    """sha256 of every file under `root` (hidden ones included), by relative path."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _episodes(task: str, n: int, rng: np.random.Generator) -> list[Episode]:
    return [Episode(task, rng.normal(size=(10, 4)).astype(np.float32),
                    rng.uniform(-1, 1, (10, 2)).astype(np.float32), np.ones(10, np.float32),
                    np.ones(10, np.float32)) for _ in range(n)]


def _full_after(monkeypatch, chunks: int, where: str, then) -> list[Path]:
    """Let `chunks` writes to paths containing `where` through, then call `then()` and raise
    ENOSPC."""
    real, seen = pac.io.write_chunk, []

    def write_chunk(fd: int, data, path: Path) -> None:
        if where in str(path):
            seen.append(path)
            if len(seen) > chunks:
                then()
                raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real(fd, data, path)

    monkeypatch.setattr(pac.io, "write_chunk", write_chunk)
    return seen


# the call writes two shards: cartpole.balance-00001, then point_mass.easy-00002
@pytest.mark.parametrize(("where", "chunks"), [
    ("cartpole.balance-00001", 0),  # its first byte
    ("cartpole.balance-00001", 5),  # a few files in
    ("point_mass.easy-00002", 0),  # after the first shard of the call was committed
])
def test_disk_full_during_a_shard_commit_leaves_the_store_byte_identical(tmp_path, monkeypatch,
                                                                           where, chunks):
    rng = np.random.default_rng(0)
    store = EpisodeStore(tmp_path / "episodes")
    store.append_episodes("expert", _episodes("point_mass.easy", 2, rng))
    before = _tree(store.root)
    committed: list[bool] = []
    seen = _full_after(monkeypatch, chunks, where, lambda: committed.append(
        (store.root / "expert" / "cartpole.balance-00001" / "manifest.json").is_file()))
    new = _episodes("cartpole.balance", 2, rng) + _episodes("point_mass.easy", 1, rng)
    with pytest.raises(StoreError, match="disk full while appending to group 'expert'.*the"
                       " store is unchanged") as err:
        store.append_episodes("expert", new)
    assert len(seen) == chunks + 1  # the failure happened where it was asked for
    assert committed == [where.startswith("point_mass")]
    assert str(err.value).count("\n") == 0
    assert _tree(store.root) == before
    assert [s.key for s in store.shards] == ["expert/point_mass.easy-00000"]
    assert [s.key for s in EpisodeStore(store.root, verify=True).shards] == [
        "expert/point_mass.easy-00000"]
    monkeypatch.undo()  # space freed: the same append now succeeds
    assert len(store.append_episodes("expert", new)) == 2


def test_disk_full_during_a_checkpoint_save_keeps_the_previous_one_resumable(
        reference_run, data_root, mlflow_root, tmp_path, monkeypatch, capsys):
    """The disk fills up while checkpoint step 20 is written. DeepSpeed's own files of the
    checkpoint (torch.save) do not go through pac.io, so the full disk is simulated at the
    project's first write into the folder, the per-rank RNG state (pac.io.write_chunk): DeepSpeed
    has written its part, the manifest is not written. `pac train` exits with one line, the
    partial folder is gone, step 10 is byte-identical to what it was and a resume from it ends
    equal (torch.equal) to the uninterrupted run."""
    _, ref = reference_run
    run = tmp_path / "run"
    ckpts = run / "checkpoints"
    snapshot: dict[str, str] = {}
    real = pac.io.write_chunk

    def write_chunk(fd: int, data, path: Path) -> None:
        if "step_00000020" in str(path):
            snapshot.update(_tree(ckpts / "step_00000010"))  # step 10 just before the failure
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real(fd, data, path)

    monkeypatch.setattr(pac.io, "write_chunk", write_chunk)
    args = ["train", "--data-root", str(data_root)]
    for o in train_overrides(run, mlflow_root):
        args += ["--set", o]
    rc = main(args)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and err == [
        "pac train: disk full while writing checkpoint step_00000020: the previous checkpoint"
        " step_00000010 is intact; free space and resume with --resume"]
    assert not (ckpts / "step_00000020").exists()  # the partial folder is removed
    assert snapshot and _tree(ckpts / "step_00000010") == snapshot
    previous = ckpts / "step_00000010"
    assert (previous / MANIFEST).is_file() and verify(previous) is None

    monkeypatch.undo()  # space freed
    result = train(train_config(run, mlflow_root), resume=True, data_root=data_root)
    assert result.start_step == 10
    expected = load_file(str(ref.policy_dir / "model.safetensors"))
    got = load_file(str(result.policy_dir / "model.safetensors"))
    assert all(torch.equal(expected[k], got[k]) for k in expected)
