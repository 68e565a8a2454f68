"""The project's per-episode rollout file (docs/rollout_format.md): write it, read it safely.

A rollout file is a zip of ``.npy`` arrays plus ``meta.json``. Reading never unpickles, never
follows a symlink (the file is opened with ``O_NOFOLLOW`` and must be a regular file) and never
holds more than a member's declared size: members are read through a bounded stream that stops
at min(declared size, cap) + 1 bytes, so a member that lies about its size (a 1,000-byte header
over a 200 MB deflate stream) costs at most its declared size in memory before it is refused.
"""

from __future__ import annotations

import io
import json
import math
import os
import pickletools
import stat
import zipfile
from pathlib import Path
from typing import IO, Any

import numpy as np

from pac.data.store import Episode
from pac.io import atomic_write
from pac.rlft.ingest.checks import (
    ARRAYS,
    MAX_JSON_BYTES,
    Rejected,
    describe,
    load_json,
    quote,
    validate_episode,
)

FORMAT = "pac-rollout"
VERSION = 1
SUFFIX = ".npz"
MAX_MEMBER_BYTES = 1 << 30  # an archive member declaring more is refused before it is read
MAX_MEMBERS = 64  # an archive listing more members is refused (a rollout has at most 6)
MAX_SNIFF_BYTES = 1 << 20  # bytes of a non-zip file read to tell a pickle from other junk


def write_rollout(path: str | Path, episode: Episode, meta: dict[str, Any] | None = None) -> Path:
    """Write one episode as a rollout file (a zip of .npy arrays + meta.json), atomically."""
    doc = {**(meta or {}), "format": FORMAT, "version": VERSION, "task": episode.task}
    doc.setdefault("success", bool(episode.success))

    def write(fh) -> None:
        with zipfile.ZipFile(fh, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            zf.writestr("meta.json", json.dumps(doc, sort_keys=True, default=_json_scalar))
            for name in ARRAYS:
                value = getattr(episode, name)
                if value is not None:
                    with zf.open(f"{name}.npy", "w", force_zip64=True) as fh:
                        np.lib.format.write_array(fh, np.ascontiguousarray(value))

    return atomic_write(Path(path), write)


def _json_scalar(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def open_regular(path: Path) -> IO[bytes]:
    """Open `path` for reading without following a symlink; only a regular file is opened."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:
        if os.path.islink(path):
            raise Rejected("symlink", f"{path} is a symbolic link: not followed") from exc
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise Rejected("not-a-rollout", f"{path} is not a regular file")
    return os.fdopen(fd, "rb")


def is_pickle(data: bytes) -> bool:
    """True when `data` is a pickle opcode stream; pickletools only parses it, nothing runs."""
    if not data or data.startswith((b"PK", np.lib.format.MAGIC_PREFIX)):
        return False
    try:
        ops = list(pickletools.genops(data))
    except Exception:  # noqa: BLE001 - not a complete pickle: a cut protocol 2-5 one still counts
        return data[:1] == b"\x80" and data[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05")
    return bool(ops) and ops[-1][0].name == "STOP"


def read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, cap: int) -> bytes:
    """The bytes of one member, read through a stream bounded by its declared size and `cap`.

    The declared size is checked against `cap` before anything is read; the stream then stops
    one byte past min(declared, cap), so inflating more than declared is never held in memory
    (zipfile itself stops at the declared size and fails the CRC: `truncated`).
    """
    name = info.filename
    if info.file_size > cap:
        raise Rejected("too-large", f"{name} declares {info.file_size} bytes > {cap}")
    with zf.open(info) as fh:
        # read(n) inflates at most n bytes per step (zlib max_length): never more than `limit`
        data = fh.read(min(info.file_size, cap) + 1)
    if len(data) > info.file_size:
        raise Rejected("too-large", f"{name} inflates past its declared {info.file_size} bytes")
    return data


def _read_npy(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> np.ndarray:
    """Read one .npy member: header checked first (no objects, sane size), never unpickled."""
    name = info.filename
    data = read_member(zf, info, MAX_MEMBER_BYTES)  # a CRC or length mismatch raises here
    if is_pickle(data):
        raise Rejected("pickle", f"{name} is a Python pickle, refused: unpickling executes code")
    fh = io.BytesIO(data)
    try:
        version = np.lib.format.read_magic(fh)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
        else:
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
    except ValueError as exc:
        raise Rejected("npy", f"{name} is not a valid .npy array: {type(exc).__name__}") from exc
    if dtype.hasobject:
        raise Rejected("pickle", f"{name} holds Python objects (a pickle), refused")
    count, payload = math.prod(shape), data[fh.tell() :]
    if len(payload) != count * dtype.itemsize:
        raise Rejected(
            "truncated",
            f"{name}: the header says {list(shape)} {dtype} ({count * dtype.itemsize} bytes),"
            f" the data has {len(payload)} bytes",
        )
    arr = np.frombuffer(payload, dtype=dtype, count=count)
    return arr.reshape(shape, order="F" if fortran else "C")


def parse_meta(raw: bytes) -> dict[str, Any]:
    """meta.json -> a pac-rollout v1 JSON object holding 'task', or Rejected."""
    meta = load_json(raw, "meta.json", "meta")
    if not isinstance(meta, dict):
        raise Rejected("meta", "meta.json must hold a JSON object")
    if meta.get("format") != FORMAT:
        raise Rejected("meta", f"meta.json format is {quote(meta.get('format'))}; expected"
                       f" {FORMAT!r}")
    if meta.get("version") != VERSION:
        raise Rejected("meta", f"format version {quote(meta.get('version'))}; this reads {VERSION}")
    if "task" not in meta:
        raise Rejected("missing", "meta.json has no 'task'")
    return meta


def read_rollout(path: str | Path) -> tuple[Episode, dict[str, Any]]:
    """Parse and validate one rollout file -> (episode, its meta.json); or raise Rejected."""
    path = Path(path)
    with open_regular(path) as fh:
        size = os.fstat(fh.fileno()).st_size
        if size == 0:
            raise Rejected("empty", "the file is empty (0 bytes)")
        head = fh.read(min(size, MAX_SNIFF_BYTES))
        if is_pickle(head):
            raise Rejected("pickle", "the file is a Python pickle, refused: unpickling executes"
                           " code")
        if head[:4] != b"PK\x03\x04":
            raise Rejected("not-a-rollout", f"not a rollout archive: a {size}-byte file that"
                           " does not start with a zip header")
        fh.seek(0)
        try:
            with zipfile.ZipFile(fh) as zf:
                infos = zf.infolist()
                if len(infos) > MAX_MEMBERS:
                    raise Rejected("too-large", f"the archive lists {len(infos)} members"
                                   f" (> {MAX_MEMBERS})")
                members = {i.filename: i for i in infos}
                for required in ("meta.json", "proprio.npy", "actions.npy"):
                    if required not in members:
                        raise Rejected("missing", f"required member {required} is missing")
                raw_meta = read_member(zf, members["meta.json"], MAX_JSON_BYTES)
                arrays = {
                    n: _read_npy(zf, members[f"{n}.npy"]) for n in ARRAYS if f"{n}.npy" in members
                }
        except Rejected:
            raise
        except Exception as exc:  # noqa: BLE001 - zipfile/zlib raise many types for damaged files
            raise Rejected("truncated", f"corrupt or truncated archive: {describe(exc)}") from exc
    meta = parse_meta(raw_meta)
    episode = validate_episode(
        meta["task"],
        arrays["proprio"],
        arrays["actions"],
        rewards=arrays.get("rewards"),
        discounts=arrays.get("discounts"),
        images=arrays.get("images"),
        success=meta.get("success"),
    )
    return episode, meta
