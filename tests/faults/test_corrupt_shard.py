"""Corruption is caught, never trained on: one flipped byte in an episode shard stops `pac train`
before any compute, with one line naming the file."""

import numpy as np

from pac.cli import main
from pac.data import Episode, EpisodeStore, TaskTokenizer, store_root, tokenizer_path


def test_flipped_byte_in_a_shard_refuses_training(tmp_path, capsys):
    rng = np.random.default_rng(0)
    store = EpisodeStore(store_root(tmp_path))
    store.append_episodes("expert", [
        Episode("point_mass.easy", rng.normal(size=(10, 4)).astype(np.float32),
                rng.uniform(-1, 1, (10, 2)).astype(np.float32), np.ones(10, np.float32),
                np.ones(10, np.float32)) for _ in range(2)])
    TaskTokenizer.train(tokenizer_path(tmp_path), vocab_size=64)
    shard = store.shards[0].path
    data = bytearray((shard / "proprio.npy").read_bytes())
    data[-5] ^= 0x01  # one bit of the last float: shapes and dtypes stay valid
    (shard / "proprio.npy").write_bytes(bytes(data))
    out = tmp_path / "run"
    rc = main(["train", "--data-root", str(tmp_path), "--set", f"train.out_dir={out}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1
    assert "refusing to train" in err[0] and f"{shard}" in err[0]
    assert "proprio.npy fails its sha256 checksum" in err[0]
    assert not out.exists()  # nothing was trained or written


def test_flipped_or_truncated_tokenizer_refuses_training(tmp_path, capsys):
    rng = np.random.default_rng(0)
    EpisodeStore(store_root(tmp_path)).append_episodes("expert", [
        Episode("point_mass.easy", rng.normal(size=(10, 4)).astype(np.float32),
                rng.uniform(-1, 1, (10, 2)).astype(np.float32), np.ones(10, np.float32),
                np.ones(10, np.float32))])
    path = tokenizer_path(tmp_path)
    TaskTokenizer.train(path, vocab_size=64)
    good = path.read_bytes()
    flipped = good[:-9] + bytes([good[-9] ^ 0x01]) + good[-8:]
    for bad in (flipped, good[: len(good) // 2]):
        path.write_bytes(bad)
        rc = main(["train", "--data-root", str(tmp_path), "--set",
                   f"train.out_dir={tmp_path / 'run'}"])
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and len(err) == 1, err
        assert f"tokenizer model {path} does not match its recorded sha256" in err[0]
        assert not (tmp_path / "run").exists()
