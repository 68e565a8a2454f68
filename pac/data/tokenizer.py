"""SentencePiece task-instruction tokens (App. C.3): at most N_tau^L = 50 ids, zero-padded, masked.

Id 0 is the padding id (never produced by encoding), id 1 the unknown piece; there are no
BOS/EOS ids. Trained on the instructions of the tasks (the built-ins' instructions are their
names; a declared task's is free text, :mod:`pac.config`) plus one line of the characters
instructions may use, so instructions not seen in training still tokenize without unknowns.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from pac.io import atomic_write_bytes, atomic_write_text, sha256_file
from pac.tasks import BUILTIN_TASKS, TASKS

if TYPE_CHECKING:
    from pac.config import PACConfig

PAD_ID = 0
UNK_ID = 1
CHARSET = "abcdefghijklmnopqrstuvwxyz0123456789._-"


def hash_path(model: str | Path) -> Path:
    """The recorded SHA-256 of a tokenizer model: ``<model>.sha256`` (``sha256sum -c`` format)."""
    model = Path(model)
    return model.with_name(model.name + ".sha256")


def check_model(path: str | Path, required: bool = True) -> None:
    """Raise ValueError naming `path` unless its bytes match the recorded SHA-256 (a missing
    record is an error only when `required`)."""
    path, record = Path(path), hash_path(path)
    if not record.is_file():
        if required:
            raise ValueError(f"tokenizer model {path} has no recorded sha256 ({record});"
                             " rebuild it with `pac tokenizer train`")
        return
    if sha256_file(path) != record.read_text().split()[0]:
        raise ValueError(f"tokenizer model {path} does not match its recorded sha256 ({record}):"
                         " it is corrupted or truncated; rebuild it with `pac tokenizer train`")


def corpus(tasks: list[str] | None = None) -> list[str]:
    """Training sentences: the instructions of `tasks` (names of built-in or declared tasks;
    other strings are taken as instructions; default: the built-in tasks) and the charset."""
    names = BUILTIN_TASKS if tasks is None else tasks
    return sorted({TASKS[t].instruction if t in TASKS else t for t in names}) + [CHARSET]


def instruction_tasks(cfg: PACConfig) -> list[str]:
    """The tasks whose instructions the tokenizer learns: the built-ins (the default run's
    corpus) and every task the params declare."""
    return sorted({*BUILTIN_TASKS, *cfg.tasks})


class TaskTokenizer:
    """Encode a task instruction as fixed-length ids and a validity mask."""

    def __init__(self, model_proto: bytes, num_tokens: int = 50):
        import sentencepiece as spm

        self.proto = model_proto
        self.num_tokens = num_tokens
        self.sp = spm.SentencePieceProcessor(model_proto=model_proto)
        if self.sp.pad_id() != PAD_ID:
            raise ValueError(f"tokenizer model has pad id {self.sp.pad_id()}, expected {PAD_ID}")
        self._cache: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    @property
    def vocab_size(self) -> int:
        return int(self.sp.get_piece_size())

    @classmethod
    def train(
        cls,
        out_path: str | Path,
        vocab_size: int = 64,
        model_type: str = "bpe",
        tasks: list[str] | None = None,
        num_tokens: int = 50,
    ) -> TaskTokenizer:
        """Train on the task instructions and save the model atomically to `out_path`."""
        import sentencepiece as spm

        if model_type not in ("bpe", "unigram"):
            raise ValueError(f"tokenizer type {model_type!r} is not one of bpe, unigram")
        sentences = corpus(tasks)
        needed = len(set("".join(sentences))) + 2  # every character, plus pad and unk
        if vocab_size < needed:
            raise ValueError(
                f"tokenizer vocabulary {vocab_size} is too small: the instructions' characters"
                f" alone need {needed} pieces (data.tokenizer_vocab >= {needed})"
            )
        buffer = io.BytesIO()
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(sentences),
            model_writer=buffer,
            vocab_size=vocab_size,
            model_type=model_type,
            hard_vocab_limit=False,  # a few dozen names cap the vocabulary below the request
            character_coverage=1.0,
            pad_id=PAD_ID,
            unk_id=UNK_ID,
            bos_id=-1,
            eos_id=-1,
            split_by_unicode_script=False,
            minloglevel=2,
        )
        atomic_write_bytes(Path(out_path), buffer.getvalue())
        atomic_write_text(hash_path(out_path),
                          f"{sha256_file(Path(out_path))}  {Path(out_path).name}\n")
        return cls(buffer.getvalue(), num_tokens)

    @classmethod
    def load(cls, path: str | Path, num_tokens: int = 50) -> TaskTokenizer:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(
                f"tokenizer model not found: {path} (build it with `pac tokenizer train`)"
            )
        check_model(path, required=False)  # a model with a recorded sha256 must match it
        try:
            return cls(path.read_bytes(), num_tokens)
        except RuntimeError as exc:
            raise ValueError(f"{path} is not a SentencePiece model ({exc})") from exc

    def encode(self, instruction: str) -> tuple[np.ndarray, np.ndarray]:
        """ids int64 [num_tokens] (0-padded) and mask bool [num_tokens] (True = a real token)."""
        if instruction not in self._cache:
            pieces = self.sp.encode(instruction)
            if not pieces:
                raise ValueError(f"instruction {instruction!r} encodes to no tokens")
            if len(pieces) > self.num_tokens:
                raise ValueError(
                    f"instruction {instruction!r} needs {len(pieces)} tokens; the model takes at"
                    f" most {self.num_tokens} (model.num_text_tokens)"
                )
            ids = np.zeros(self.num_tokens, dtype=np.int64)
            ids[: len(pieces)] = pieces
            mask = np.zeros(self.num_tokens, dtype=bool)
            mask[: len(pieces)] = True
            self._cache[instruction] = (ids, mask)
        ids, mask = self._cache[instruction]
        return ids.copy(), mask.copy()

    def decode(self, ids: np.ndarray) -> str:
        return self.sp.decode([int(i) for i in ids if i != PAD_ID])
