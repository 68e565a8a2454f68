"""Episode store: round trip, memory-mapped reads, atomic appends, corruption named, quarantine."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from data_helpers import synthetic_episode

from pac.data.store import EpisodeStore, StoreError, temp_dir, write_shard


def test_round_trip_and_memory_mapped(tmp_path):
    rng = np.random.default_rng(1)
    eps = [synthetic_episode("reacher.easy", n, rng, success=n > 5, cameras=2, quality=0.5,
                             source="rollout", round=2, extra={"content_hash": f"h{n}"})
           for n in (3, 8, 5)]
    store = EpisodeStore(tmp_path)
    keys = store.append_episodes("rollout_r2", eps)
    assert keys == ["rollout_r2/reacher.easy-00000"]
    again = EpisodeStore(tmp_path, verify=True)
    (shard,) = again.shards
    assert isinstance(shard.proprio, np.memmap) and isinstance(shard.images, np.memmap)
    idx = again.episodes
    assert idx["length"].tolist() == [3, 8, 5] and idx["start"].tolist() == [0, 3, 11]
    assert idx["success"].tolist() == [False, True, False]
    assert set(idx["source"]) == {"rollout"} and set(idx["round"]) == {2}
    assert idx["content_hash"].tolist() == ["h3", "h8", "h5"]
    for ep, (_, row) in zip(eps, idx.iterrows()):
        rows = slice(row["start"], row["start"] + row["length"])
        np.testing.assert_array_equal(shard.proprio[rows], ep.proprio)
        np.testing.assert_array_equal(shard.actions[rows], ep.actions)
        np.testing.assert_array_equal(shard.images[rows], ep.images)
        assert row["return"] == pytest.approx(float(ep.rewards.sum()), rel=1e-5)
    # a second append never touches the first shard
    store.append_episodes("rollout_r2", eps[:1])
    assert [s.key for s in EpisodeStore(tmp_path).shards] == [
        "rollout_r2/reacher.easy-00000", "rollout_r2/reacher.easy-00001"]


def test_summary_is_table6_like(small_store):
    table = small_store.summary({"a": 8.0, "b": 2.0, "c": 2.0}, trajectory_length=5)
    print(table.to_string(index=False))
    row = table.set_index("group")
    assert row.loc["a", "tasks"] == 2 and row.loc["a", "episodes"] == 9
    assert row.loc["a", "transitions"] == 5 * 12 + 4 * 9
    assert row.loc["c", "success"] == 50.0 and row.loc["b", "success"] == 0.0
    assert row.loc["a", "P_group"] == pytest.approx(8 / 12, abs=1e-3)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda ep: setattr(ep, "actions", ep.actions[:-1]), "actions must be [L=6, N^A]"),
        (lambda ep: setattr(ep, "rewards", ep.rewards[:, None]), "rewards must be [L=6]"),
        (lambda ep: ep.proprio.__setitem__((2, 1), np.nan), "proprio has NaN or infinite"),
        (lambda ep: setattr(ep, "quality", 1.5), "quality 1.5 is outside [0, 1]"),
        (lambda ep: setattr(ep, "source", "web"), "source 'web' is not one of"),
        (lambda ep: setattr(ep, "task", "bad task!"), "task 'bad task!' is not a valid"),
    ],
)
def test_bad_episodes_are_rejected_before_writing(tmp_path, change, message):
    rng = np.random.default_rng(0)
    good = synthetic_episode("point_mass.easy", 6, rng)
    bad = synthetic_episode("point_mass.easy", 6, rng)
    change(bad)
    store = EpisodeStore(tmp_path)
    with pytest.raises(StoreError) as err:
        store.append_episodes("g", [good, bad])
    assert "group g episode 1: " in str(err.value) and message in str(err.value)
    assert EpisodeStore(tmp_path).shards == []  # nothing written, not even the good episode


def test_zero_episodes_and_bad_group_names(tmp_path):
    store = EpisodeStore(tmp_path)
    with pytest.raises(StoreError, match="no episodes given"):
        store.append_episodes("g", [])
    ep = synthetic_episode("point_mass.easy", 3, np.random.default_rng(0))
    with pytest.raises(StoreError, match="invalid group name '../up'"):
        store.append_episodes("../up", [ep])


def _corrupt_missing(shard):
    os.remove(shard / "actions.npy")


def _corrupt_shape(shard):
    np.save(shard / "rewards.npy", np.zeros(3, np.float32))


def _corrupt_bytes(shard):
    raw = bytearray((shard / "proprio.npy").read_bytes())
    raw[-1] ^= 0xFF  # same shape and dtype, different content
    (shard / "proprio.npy").write_bytes(bytes(raw))


def _corrupt_index(shard):
    (shard / "episodes.parquet").write_bytes(b"not parquet")


def _corrupt_manifest(shard):
    (shard / "manifest.json").write_text("{")


@pytest.mark.parametrize(
    ("corrupt", "verify", "message"),
    [
        (_corrupt_missing, False, "actions.npy is missing"),
        (_corrupt_shape, False, "rewards.npy has shape (3,)"),
        (_corrupt_bytes, True, "proprio.npy fails its sha256 checksum"),
        (_corrupt_index, False, "episodes.parquet is unreadable"),
        (_corrupt_manifest, False, "manifest.json is not JSON"),
    ],
)
def test_corrupted_shard_is_named(small_store, corrupt, verify, message):
    shard = small_store.root / "b" / "cartpole.balance-00000"
    corrupt(shard)
    with pytest.raises(StoreError) as err:
        EpisodeStore(small_store.root, verify=verify)
    assert f"corrupted shard {shard}" in str(err.value) and message in str(err.value)


def test_quarantine_moves_the_bad_shard_and_keeps_the_rest(small_store):
    _corrupt_missing(small_store.root / "b" / "cartpole.balance-00000")
    store = EpisodeStore(small_store.root, quarantine=True)
    assert store.quarantined == ["b/cartpole.balance-00000"]
    assert store.groups == ["a", "c"]
    moved = small_store.root / "_quarantine" / "b"
    assert (moved / "cartpole.balance-00000" / "proprio.npy").is_file()  # nothing lost
    assert "actions.npy is missing" in (moved / "cartpole.balance-00000.reason.txt").read_text()
    assert EpisodeStore(small_store.root).groups == ["a", "c"]


def test_shards_are_immutable(tmp_path):
    ep = synthetic_episode("point_mass.easy", 3, np.random.default_rng(0))
    write_shard(tmp_path, "s", "g", [ep])
    manifest = json.loads((tmp_path / "s" / "manifest.json").read_text())
    with pytest.raises(StoreError, match="exists already"):
        write_shard(tmp_path, "s", "g", [ep])
    assert json.loads((tmp_path / "s" / "manifest.json").read_text()) == manifest


def test_a_crash_mid_write_leaves_no_visible_shard(tmp_path):
    """Kill a writer between two files of a shard: readers see only whole shards."""
    code = f"""
import os, numpy as np
import pac.data.store as st
from pac.data.store import EpisodeStore
from data_helpers import synthetic_episode
rng = np.random.default_rng(0)
store = EpisodeStore({str(tmp_path)!r})
store.append_episodes("g", [synthetic_episode("point_mass.easy", 4, rng)])
real = st._save_npy
def dying(path, array):
    real(path, array)
    if path.name == "actions.npy":
        os._exit(9)  # killed after two of the shard's files
st._save_npy = dying
store.append_episodes("g", [synthetic_episode("point_mass.easy", 4, rng)])
"""
    here = os.path.dirname(__file__)
    out = subprocess.run([sys.executable, "-c", code], cwd=here, capture_output=True, text=True)
    assert out.returncode == 9, out.stderr
    leftovers = [p.name for p in (tmp_path / "g").iterdir()]
    assert any(n.startswith(".tmp-") for n in leftovers)  # the half shard is hidden
    store = EpisodeStore(tmp_path, verify=True)
    assert [s.key for s in store.shards] == ["g/point_mass.easy-00000"]
    live = temp_dir(tmp_path / "g", "busy")  # a writer still running: its folder must stay
    rng = np.random.default_rng(5)
    store.append_episodes("g", [synthetic_episode("point_mass.easy", 4, rng)])
    assert [p for p in (tmp_path / "g").iterdir() if p.name.startswith(".tmp-")] == [live]
    assert len(EpisodeStore(tmp_path, verify=True).shards) == 2


def test_cli_stats_version_tokenizer(small_store, capsys):
    from pac.cli import main

    root = small_store.root.parent
    assert main(["data", "stats", "--root", str(root), "--verify", "--by-task"]) == 0
    out = capsys.readouterr().out
    assert "cartpole.balance" in out and "(checksums verified)" in out and "P_eff" in out
    assert main(["data", "version", "--root", str(root)]) == 0
    version = json.loads(capsys.readouterr().out)
    assert version["dvc_lock"] is None and version["episodes_fingerprint"] == (
        small_store.fingerprint())
    assert main(["tokenizer", "train", "--root", str(root)]) == 0
    assert (root / "tokenizer" / "spm.model").is_file()
    assert main(["data", "stats", "--root", str(root / "nowhere")]) == 2
    assert "no episodes under" in capsys.readouterr().err
