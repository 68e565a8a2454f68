"""SentencePiece task tokens: trained on a handful of names, 0-padded to 50 with a mask."""

import numpy as np
import pytest

from pac.data.tokenizer import PAD_ID, TaskTokenizer
from pac.tasks import TASKS


@pytest.mark.parametrize("model_type", ["bpe", "unigram"])
def test_train_save_load_encode(tmp_path, model_type):
    path = tmp_path / "tok" / "spm.model"
    tok = TaskTokenizer.train(path, vocab_size=1000, model_type=model_type)  # capped, no error
    assert path.is_file() and not list(path.parent.glob(".*tmp"))
    loaded = TaskTokenizer.load(path)
    print(f"{model_type}: {loaded.vocab_size} pieces (asked 1000)")
    assert loaded.vocab_size == tok.vocab_size <= 1000
    seen = {}
    for task in TASKS:
        ids, mask = loaded.encode(task)
        assert ids.shape == mask.shape == (50,) and ids.dtype == np.int64 and mask.dtype == bool
        n = int(mask.sum())
        assert n >= 1 and mask[:n].all() and not mask[n:].any()  # valid tokens first
        assert np.all(ids[~mask] == PAD_ID) and np.all(ids[mask] != PAD_ID)  # 0 is padding only
        assert loaded.decode(ids) == task
        seen[task] = tuple(ids[mask])
    assert len(set(seen.values())) == len(TASKS)  # distinct instructions, distinct tokens


def test_unseen_instruction_has_no_unknown_pieces(tmp_path):
    tok = TaskTokenizer.train(tmp_path / "spm.model", vocab_size=64, tasks=["cartpole.balance"])
    ids, mask = tok.encode("humanoid.run_2")
    assert tok.decode(ids) == "humanoid.run_2" and 1 not in ids[mask].tolist()


def test_bad_inputs(tmp_path):
    with pytest.raises(ValueError, match="vocabulary 16 is too small"):
        TaskTokenizer.train(tmp_path / "a.model", vocab_size=16)
    with pytest.raises(ValueError, match="tokenizer type 'word'"):
        TaskTokenizer.train(tmp_path / "a.model", model_type="word")
    with pytest.raises(FileNotFoundError, match="pac tokenizer train"):
        TaskTokenizer.load(tmp_path / "missing.model")
    (tmp_path / "bad.model").write_bytes(b"\x00garbage")
    with pytest.raises(ValueError, match="is not a SentencePiece model"):
        TaskTokenizer.load(tmp_path / "bad.model")
    tok = TaskTokenizer.train(tmp_path / "spm.model", vocab_size=64, num_tokens=4)
    with pytest.raises(ValueError, match="at most 4"):
        tok.encode("ball_in_cup.catch.with.a.very.long.name")
