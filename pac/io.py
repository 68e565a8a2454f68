"""Atomic file writes: a temp file in the same folder, fsync, then rename over the target.

Every byte the atomic writers put on disk goes through :func:`write_chunk` (one ``os.write``
loop): a full disk (``OSError(errno.ENOSPC)``) or any other write error surfaces there, the temp
file is removed, and the target keeps its old content. Tests replace :func:`write_chunk` to
simulate a full disk.
"""

from __future__ import annotations

import csv
import io
import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def write_chunk(fd: int, data: bytes | memoryview, path: Path) -> None:
    """Write all of `data` to the open file descriptor `fd` (the temp file `path`)."""
    view = memoryview(data).cast("B")
    while view:
        written = os.write(fd, view)
        view = view[written:]


class TempFile(io.RawIOBase):
    """The binary, seekable file object an atomic writer's callback writes into; its writes
    go through :func:`write_chunk`."""

    def __init__(self, fd: int, path: Path):
        super().__init__()
        self.fd, self.path = fd, path

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readable(self) -> bool:
        return False

    def write(self, data) -> int:  # type: ignore[override]
        view = memoryview(data).cast("B")
        write_chunk(self.fd, view, self.path)  # looked up at call time: replaceable
        return len(view)

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return os.lseek(self.fd, offset, whence)

    def tell(self) -> int:
        return os.lseek(self.fd, 0, os.SEEK_CUR)

    def truncate(self, size: int | None = None) -> int:
        size = self.tell() if size is None else size
        os.ftruncate(self.fd, size)
        return size

    def close(self) -> None:  # the fd belongs to atomic_write
        super().close()


def atomic_write(path: Path, write: Callable[[TempFile], None], exclusive: bool = False
                 ) -> Path:
    """Call ``write(fh)`` with a binary file object on a temp file next to `path`, fsync it,
    then atomically rename it to `path`.

    A crash or a write error at any point leaves either the old file or nothing: never a
    half-written one (the temp file is removed and the error re-raised). With `exclusive`, the
    complete file is hard-linked to `path` instead, which raises FileExistsError (and changes
    nothing) when `path` exists: an atomic create-if-absent, e.g. for a lock file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp_path = Path(tmp)
    try:
        try:
            os.fchmod(fd, 0o666 & ~_umask())  # mkstemp creates 0600; use the usual mode
            write(TempFile(fd, tmp_path))
            os.fsync(fd)
        finally:
            os.close(fd)
        if exclusive:
            os.link(tmp_path, path)
            tmp_path.unlink()
        else:
            os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: Path, text: str, exclusive: bool = False) -> Path:
    """`text` as UTF-8, atomically (`exclusive`: only if `path` does not exist yet)."""
    return atomic_write(Path(path), lambda fh: fh.write(text.encode()), exclusive)


def atomic_write_csv(path: Path, rows: list[dict], newline: str = "\n") -> Path:
    """`rows` (dicts with the same keys, in column order) as a CSV file, written atomically."""
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(rows[0]) if rows else ["empty"],
                            lineterminator=newline)
    writer.writeheader()
    writer.writerows(rows)
    return atomic_write_text(path, text.getvalue())


def atomic_write_bytes(path: Path, data: bytes) -> Path:
    return atomic_write(Path(path), lambda fh: fh.write(data))


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file's bytes, read in 4 MiB blocks."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()
