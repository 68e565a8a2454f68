"""The landing folder -> the episode store: guard, lock, isolate, quarantine, commit, move.

``ingest(LANDING, data_root)``:

1. refuses a LANDING that is not a landing folder (a file, a LeRobot dataset itself or a folder
   inside one, the parent of a landing folder, a git or DVC repository root, the data folder or
   the store, a symlinked ``quarantine/`` or ``processed/`` or a dataset named so, a folder this
   user cannot write): :class:`IngestRefused`, nothing moved;
2. takes an exclusive ``fcntl.flock`` on LANDING and then on the store folder (both directory
   locks: no lock file is written anywhere) and holds them for the whole run; a second ingest
   waits for them, then finds the delivery gone from LANDING or its hashes in the ledger, which
   is read only once the locks are held;
3. parses every item in isolation (:func:`parse_item`): *any* exception while reading one item
   or one episode becomes that item's / episode's rejection, and the rest of the batch goes on;
4. drops duplicates by content hash. The ledger of ingested hashes lives inside the store: the
   ``content_hash`` column of each shard's episode index, so it is written in the same atomic
   step (the shard rename) as the episodes it describes;
5. quarantines rejected items (moved to ``quarantine/`` next to a ``NAME.reason.txt``), commits
   the accepted episodes with source = rollout, round k (one atomic shard per task and camera
   count), keeps a copy of a partly rejected LeRobot dataset in ``quarantine/`` and only then
   moves the originals to ``processed/``, each only if it is unchanged since it was read (else
   it stays for the next run). Nothing is ever modified or deleted. Names are escaped in every
   label and reason (:func:`printable`) and shortened where a derived name would pass NAME_MAX.

A crash (even SIGKILL) at any point leaves a consistent state: a shard is in the store with its
ledger entries or not at all, and originals stay in the landing folder until their episodes are
committed. Rerunning the same ingest finds committed episodes in the ledger (origin = the same
file) and only moves their files on: nothing is lost, nothing is added twice.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import math
import os
import shutil
import stat
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pac.data.store import SOURCES, Episode, EpisodeStore, is_group_name
from pac.io import atomic_write_text
from pac.rlft.ingest.checks import (
    Rejected,
    content_hash,
    describe,
    is_utf8_name,
    printable,
)
from pac.rlft.ingest.lerobot import MAX_TREE_ENTRIES, Parsed, is_lerobot_dir, read_lerobot
from pac.rlft.ingest.rollout_file import SUFFIX, read_rollout

ROLLOUT_GROUP = "rollouts"  # the default store group of ingested robot episodes
QUARANTINE = "quarantine"
PROCESSED = "processed"
LOCK_WAIT_S = 600.0  # how long a second ingest waits for the first before giving up
#: test hook: "STAGE:SECONDS[:PATH]" sleeps at STAGE (before_commit | after_commit) for SECONDS
#: or until PATH exists, so a test can kill us or start a second ingest meanwhile
PAUSE_ENV = "PAC_INGEST_PAUSE"
#: bytes of a name given to a moved item: a longer delivered name is cut and hashed, leaving
#: room within NAME_MAX (255) for ".N", ".reason.txt" and a temp file's 14 extra bytes
NAME_BUDGET = 200
MAX_PEEK = 1000  # entries of each LANDING subfolder looked at to tell a nested landing folder


class IngestRefused(ValueError):
    """The ingest did not start (a LANDING that is not a landing folder, a lock held too long)."""


@dataclass
class IngestReport:
    """What one ingest did; `rejected` maps each rejected file / episode to its reason."""

    batch: str
    landing: str
    group: str
    round: int
    accepted: list[str] = field(default_factory=list)  # committed by this run
    already: list[str] = field(default_factory=list)  # committed by an earlier, interrupted run
    rejected: dict[str, str] = field(default_factory=dict)
    #: items not moved on (changed while being read, or a move that failed): left in LANDING
    left: dict[str, str] = field(default_factory=dict)
    shards: list[str] = field(default_factory=list)
    successes: int = 0
    data_version: dict[str, Any] = field(default_factory=dict)

    @property
    def episodes_added(self) -> int:
        return len(self.accepted)

    @property
    def success_rate(self) -> float:
        return self.successes / len(self.accepted) if self.accepted else math.nan

    @property
    def exit_code(self) -> int:
        """0: everything accepted or already known; 1: anything rejected or left in LANDING."""
        return 1 if self.rejected or self.left else 0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "episodes_added": self.episodes_added,
                "success_rate": None if math.isnan(self.success_rate) else self.success_rate}


# --- what may be ingested ------------------------------------------------------------------------


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def check_landing(landing: Path, data_root: Path) -> None:
    """Refuse (IngestRefused) a LANDING whose items are not deliveries; nothing is touched.

    A LeRobot dataset passed as LANDING is refused rather than ingested as one item: moving it
    into its own ``processed/`` is impossible, and a wrong argument should change nothing.
    """
    from pac.data import store_root

    if not os.path.lexists(landing):
        raise FileNotFoundError(f"landing folder {landing} does not exist")
    if not landing.is_dir():
        raise IngestRefused(f"{landing} is a file, not a landing folder: put the delivered files"
                            " into a folder and pass that folder")
    hint = " (pass the folder the robots deliver into, e.g. rlft.landing_dir = data/landing)"
    if is_lerobot_dir(landing):
        raise IngestRefused(
            f"{landing} is itself a LeRobotDataset (it has meta/info.json), not a landing folder:"
            f" put it inside one, e.g. mkdir landing && mv {landing} landing/ && pac ingest landing"
        )
    dataset = next((p for p in landing.resolve().parents if is_lerobot_dir(p)), None)
    if dataset is not None:
        raise IngestRefused(f"{landing} is inside the LeRobotDataset {dataset}, not a landing"
                            f" folder: pass the folder that holds the dataset{hint}")
    for marker in (".git", ".dvc"):
        if os.path.lexists(landing / marker):
            raise IngestRefused(f"{landing} is the root of a {marker[1:]} repository, not a"
                                f" landing folder{hint}")
    here, data = landing.resolve(), Path(data_root).resolve()
    store = store_root(data_root).resolve()
    if _inside(data, here) or _inside(here, store):
        where = "inside the episode store" if _inside(here, store) else "the data folder"
        raise IngestRefused(f"{landing} is or contains {where} ({data_root}): not a landing"
                            f" folder{hint}")
    for sub in (QUARANTINE, PROCESSED):
        path = landing / sub
        if os.path.lexists(path) and not stat.S_ISDIR(os.lstat(path).st_mode):
            raise IngestRefused(f"{path} is a symbolic link or a file: refused (nothing is moved"
                                " through it); remove it and rerun")
        if is_lerobot_dir(path):
            raise IngestRefused(f"{path} is a LeRobotDataset, but pac ingest keeps its {sub}/"
                                " folder under that name: rename the dataset (e.g. mv"
                                f" {path} {path}_dataset) and rerun")
    for name in sorted(os.listdir(landing)):
        why = _looks_like_landing(landing / name)
        if why:
            raise IngestRefused(f"{landing} holds {name}, which {why}: it looks like the"
                                f" landing folder itself; pass it instead of its parent{hint}")
    for path in (landing, landing / QUARANTINE, landing / PROCESSED):
        if os.path.isdir(path) and not os.access(path, os.W_OK | os.X_OK):
            raise IngestRefused(f"{path} is not writable by this user: nothing was read, moved"
                                " or stored; make it writable and rerun")


def _looks_like_landing(folder: Path) -> str:
    """Why `folder`, an entry of LANDING, is a landing folder and not a delivery ('' if not):
    it has our quarantine/ or processed/ folder, or holds rollout files or datasets."""
    try:
        if not entry_is_plain_dir(folder) or is_lerobot_dir(folder) or \
                folder.name.startswith(".") or folder.name in (QUARANTINE, PROCESSED):
            return ""
        for sub in (QUARANTINE, PROCESSED):
            if entry_is_plain_dir(folder / sub):
                return f"has a {sub}/ folder"
        with os.scandir(folder) as entries:
            for _, entry in zip(range(MAX_PEEK), entries):
                if entry.is_dir(follow_symlinks=False) and is_lerobot_dir(folder / entry.name):
                    return "holds a LeRobotDataset"
                if entry.is_file(follow_symlinks=False) and entry.name.endswith(SUFFIX):
                    return f"holds {SUFFIX} rollout files"
    except OSError:
        return ""
    return ""


def entry_is_plain_dir(path: Path) -> bool:
    """A real folder (not a link to one); False for anything else or a missing path."""
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


@contextlib.contextmanager
def _locked(folder: Path, what: str, wait_s: float) -> Iterator[None]:
    """Hold an exclusive flock on the directory `folder` (released when the process dies)."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"ingest: waiting for {what} {folder}: another pac ingest holds it",
                  file=sys.stderr, flush=True)
            deadline = time.monotonic() + wait_s
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise IngestRefused(f"another pac ingest has held {what} {folder} for"
                                            f" more than {wait_s:g} s") from None
                    time.sleep(0.05)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def landing_items(landing: Path) -> list[Path]:
    """Candidates in a landing folder, sorted: files, folders and links, except hidden names
    (in-flight writes of a robot that writes ``.name`` then renames) and our own subfolders."""
    return sorted(
        landing / e.name for e in os.scandir(landing)
        if not e.name.startswith(".") and e.name not in (QUARANTINE, PROCESSED)
    )


def parse_item(path: Path) -> list[tuple[str, Parsed | Rejected]]:
    """One landing item -> its episodes: a rollout file gives one, a LeRobot dataset several.

    Never raises: a symlink is rejected unread, and any failure while reading becomes the
    item's rejection (``unreadable`` names the exception) so the rest of the batch goes on.
    Labels are :func:`printable` names: a newline or a non-UTF-8 byte in a name is escaped.
    """
    label = printable(path.name, name=True)
    try:
        if not is_utf8_name(path.name):
            raise Rejected("encoding", f"the name {label} is not valid UTF-8 (its undecodable"
                           " bytes shown as \\xNN): rename it with a UTF-8 name and deliver"
                           " it again")
        mode = os.lstat(path).st_mode
        if stat.S_ISLNK(mode):
            raise Rejected("symlink", "a symbolic link: not followed, its target is not read")
        if stat.S_ISDIR(mode):
            if not is_lerobot_dir(path):
                raise Rejected("not-a-rollout", "a folder without meta/info.json is not a"
                               " LeRobotDataset v3.0")
            return read_lerobot(path)
        if not stat.S_ISREG(mode):
            raise Rejected("not-a-rollout", "not a regular file (a FIFO, socket or device)")
        return [(label, read_rollout(path))]
    except Rejected as exc:
        return [(label, exc)]
    except Exception as exc:  # noqa: BLE001 - one bad item must never stop the batch
        return [(label, Rejected("unreadable", describe(exc)))]


# --- ledger, quarantine, moves -------------------------------------------------------------------


def read_ledger(store: EpisodeStore) -> dict[str, str]:
    """content hash -> origin (file name or dataset#episode) of every ingested episode."""
    eps = store.episodes
    if "content_hash" not in eps.columns:
        return {}
    eps = eps[eps["content_hash"].notna()]
    return dict(zip(eps["content_hash"], eps["origin"]))


def short_name(name: str) -> str:
    """`name`, or when longer than NAME_BUDGET bytes its start + "~" + a hash of all of it, so
    every name derived from it ('.N', '.reason.txt', temp files) stays within NAME_MAX."""
    raw = os.fsencode(name)
    if len(raw) <= NAME_BUDGET:
        return name
    digest = hashlib.sha256(raw).hexdigest()[:16]
    head = name
    while len(os.fsencode(head)) > NAME_BUDGET - len(digest) - 1:
        head = head[:-1]
    return f"{head}~{digest}"


def _free_path(folder: Path, name: str) -> Path:
    """`folder/name`, or `folder/name.N` when taken (moves never overwrite anything); a long
    name is shortened first (:func:`short_name`)."""
    folder.mkdir(parents=True, exist_ok=True)
    name = short_name(name)
    dest, n = folder / name, 1
    while os.path.lexists(dest) or os.path.lexists(dest.with_name(dest.name + ".reason.txt")):
        dest, n = folder / f"{name}.{n}", n + 1
    return dest


def _relocated(reason: str, item: Path, dest: Path) -> str:
    """A reason that quotes where the item is now, not where it was delivered."""
    return reason.replace(printable(str(item)), printable(str(dest)))


def quarantine(path: Path, reason: str, folder: Path) -> Path:
    """Move `path` into `folder` and write ``NAME.reason.txt`` beside it (reason first)."""
    dest = _free_path(folder, path.name)
    atomic_write_text(dest.with_name(dest.name + ".reason.txt"),
                      _relocated(reason, path, dest).rstrip() + "\n")
    os.rename(path, dest)
    return dest


def keep_evidence(dataset: Path, reason: str, folder: Path) -> Path:
    """Copy a partly rejected dataset into `folder` (its original goes on to processed/)."""
    dest = _free_path(folder, dataset.name)
    tmp = folder / f".tmp-evidence-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    try:
        shutil.copytree(dataset, tmp, symlinks=True)
        atomic_write_text(dest.with_name(dest.name + ".reason.txt"),
                          _relocated(reason, dataset, dest) + "(a copy; the dataset's other"
                          f" episodes were ingested and the original is in {PROCESSED}/)\n")
        os.rename(tmp, dest)
    finally:
        if os.path.lexists(tmp):  # our own half copy, never the delivery
            shutil.rmtree(tmp, ignore_errors=True)
    return dest


def fingerprint(path: Path) -> tuple | None:
    """(entry, inode, size, mtime) of `path` and of everything inside it: what a file added,
    rewritten or removed while the item is read changes (None: unreadable, or too many)."""
    def one(p: str, rel: str) -> tuple:
        st = os.lstat(p)
        return (rel, st.st_mode, st.st_ino, st.st_size, st.st_mtime_ns)

    try:
        entries = [one(str(path), ".")]
        if stat.S_ISDIR(entries[0][1]):
            for folder, dirs, files in os.walk(path, followlinks=False):
                for name in dirs + files:
                    full = os.path.join(folder, name)
                    entries.append(one(full, os.path.relpath(full, path)))
                    if len(entries) > MAX_TREE_ENTRIES + 1:
                        return None
        return tuple(sorted(entries))
    except OSError:
        return None


def _pause(stage: str) -> None:
    """Test hook (PAC_INGEST_PAUSE=STAGE:SECONDS[:PATH]): wait at `stage` so a test can act."""
    name, _, rest = os.environ.get(PAUSE_ENV, "").partition(":")
    if name != stage:
        return
    seconds, _, release = rest.partition(":")
    print(f"ingest: pausing at {stage}", flush=True)
    deadline = time.monotonic() + float(seconds or 60)
    while time.monotonic() < deadline and not (release and os.path.exists(release)):
        time.sleep(0.02)


def ingest(
    landing: str | Path,
    data_root: str | Path,
    *,
    group: str = ROLLOUT_GROUP,
    round_k: int = 0,
    source: str = "rollout",
    lock_wait_s: float = LOCK_WAIT_S,
) -> IngestReport:
    """Ingest every episode in `landing` into the store under `data_root` (group `group`).

    Returns the report; rejected items are in ``landing/quarantine``, committed originals in
    ``landing/processed`` (with the batch report ``ingest-<batch>.json``). Raises
    IngestRefused / ValueError / FileNotFoundError before anything is touched.
    """
    from pac.data import dataset_version, store_root

    landing = Path(landing)
    if round_k < 0:
        raise ValueError(f"round must be >= 0, got {round_k}")
    if not is_group_name(group):
        raise ValueError(f"invalid store group name {group!r} (letters, digits, _ . -)")
    if source not in SOURCES:
        raise ValueError(f"source {source!r} is not one of {', '.join(SOURCES)}")
    check_landing(landing, Path(data_root))
    root = store_root(data_root)
    root.mkdir(parents=True, exist_ok=True)
    with _locked(landing, "the landing folder", lock_wait_s), \
            _locked(root, "the episode store", lock_wait_s):
        check_landing(landing, Path(data_root))  # what held the lock may have changed it
        report = _ingest_locked(landing, EpisodeStore(root), group, round_k, source)
        report.data_version = dataset_version(data_root)
        atomic_write_text(landing / PROCESSED / f"ingest-{report.batch}.json",
                          json.dumps(report.to_dict(), indent=1))
    return report


def _ingest_locked(
    landing: Path, store: EpisodeStore, group: str, round_k: int, source: str
) -> IngestReport:
    batch = time.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]
    report = IngestReport(batch, printable(str(landing)), group, round_k)
    ledger = read_ledger(store)  # read under the lock: what an earlier run committed counts
    seen: dict[str, str] = {}  # hash -> origin within this batch
    to_commit: list[Episode] = []
    #: originals to move to processed/ once their episodes are committed, with their
    #: fingerprint taken before they were read
    moves: list[tuple[Path, str, tuple | None]] = []
    evidence: dict[Path, str] = {}  # partly rejected datasets to copy into quarantine/
    for item in landing_items(landing):
        before = fingerprint(item)
        outcomes = []
        for label, parsed in parse_item(item):
            if not isinstance(parsed, Rejected):
                episode, meta = parsed
                digest = content_hash(episode)
                if ledger.get(digest) == label:
                    outcomes.append((label, "already"))
                    continue
                first = ledger.get(digest) or seen.get(digest)
                if first is None:
                    seen[digest] = label
                    episode.source, episode.round = source, round_k
                    episode.extra = {"content_hash": digest, "origin": label, "batch": batch,
                                     "meta": json.dumps(meta, sort_keys=True, default=str)}
                    to_commit.append(episode)
                    outcomes.append((label, "accepted"))
                    continue
                where = "already in the store" if digest in ledger else "earlier in this batch"
                parsed = Rejected("duplicate", f"same content as {first} ({where})")
            outcomes.append((label, parsed))
        rejected = [(lb, printable(str(r))) for lb, r in outcomes if isinstance(r, Rejected)]
        report.already += [lb for lb, r in outcomes if r == "already"]
        if len(rejected) == len(outcomes):
            try:
                dest = quarantine(item, "".join(f"{lb}: {r}\n" for lb, r in rejected),
                                  landing / QUARANTINE)
            except OSError as exc:  # e.g. the item vanished meanwhile: the batch goes on
                report.rejected.update({lb: f"{r} (not moved: {printable(describe(exc))})"
                                        for lb, r in rejected})
                continue
            report.rejected.update({lb: _relocated(r, item, dest) for lb, r in rejected})
            continue
        if rejected:  # a dataset with some bad episodes: copy it to quarantine/ after the commit
            evidence[item] = "".join(f"{lb}: {r}\n" for lb, r in rejected)
            report.rejected.update(dict(rejected))
        moves.append((item, printable(item.name, name=True), before))
    _pause("before_commit")
    if to_commit:
        # one append per camera count: a shard holds one kind of episode, so rollouts with and
        # without images (or with 1 and 2 cameras) in one batch land in shards of their own
        kinds: dict[int, list[Episode]] = {}
        for ep in to_commit:
            kinds.setdefault(0 if ep.images is None else ep.images.shape[1], []).append(ep)
        for cams in sorted(kinds):
            report.shards += store.append_episodes(group, kinds[cams])  # atomic per shard
        report.accepted = [ep.extra["origin"] for ep in to_commit]
        report.successes = sum(bool(ep.success) for ep in to_commit)
    _pause("after_commit")
    for item, label, before in moves:
        if before is None or fingerprint(item) != before:
            report.left[label] = ("changed while it was being read (a file added, rewritten or"
                                  " removed): left in LANDING, the next pac ingest reads it again"
                                  " (what was read is stored)")
            continue
        try:
            if item in evidence:
                keep_evidence(item, evidence[item], landing / QUARANTINE)
            dest = _free_path(landing / PROCESSED, item.name)
            os.rename(item, dest)
        except OSError as exc:  # its episodes are stored: a rerun finds them in the ledger
            report.left[label] = (f"not moved to {PROCESSED}/: {printable(describe(exc))}; its"
                                  " episodes are stored, a rerun moves it")
            continue
        report.rejected = {lb: _relocated(r, item, dest) for lb, r in report.rejected.items()}
    return report


def log_ingest(tracker: Any, report: IngestReport) -> None:
    """Counts, success rate and data version of an ingest on an MLflow run (a pac Tracker)."""
    codes: dict[str, int] = {}
    for reason in report.rejected.values():
        code = reason.split(":", 1)[0]
        codes[code] = codes.get(code, 0) + 1
    metrics = {
        "ingest/episodes_added": report.episodes_added,
        "ingest/rejected": len(report.rejected),
        "ingest/already_ingested": len(report.already),
        "ingest/left_in_landing": len(report.left),
    } | {f"ingest/rejected_{code}": n for code, n in sorted(codes.items())}
    if report.accepted:
        metrics["ingest/success_rate"] = 100.0 * report.success_rate
    tracker.log_metrics(metrics, step=report.round)
    tracker.log_params(
        {"ingest.landing": report.landing, "ingest.group": report.group,
         "ingest.round": report.round, "ingest.batch": report.batch}
        | {f"data_version.{k}": v for k, v in report.data_version.items()}
    )
    batch_file = Path(report.landing) / PROCESSED / f"ingest-{report.batch}.json"
    if batch_file.is_file():
        tracker.log_artifact(batch_file, "ingest")


def dvc_track(path: str | Path) -> str:
    """Record the store folder `path` as a new DVC data version; returns what was done.

    A folder that a dvc.yaml stage writes (the `rlft` stage's rollouts) is recorded by
    ``dvc repro`` itself; any other folder inside a DVC repository gets ``dvc add``.
    """
    from dvc.exceptions import NotDvcRepoError
    from dvc.repo import Repo

    path = Path(path).resolve()
    existing = next(p for p in (path, *path.parents) if p.is_dir())
    try:
        root = Repo.find_root(str(existing))
    except NotDvcRepoError:
        return f"{path} is not inside a DVC repository: not DVC-tracked"
    with Repo(root) as repo:
        for out in repo.index.outs:
            if Path(out.fs_path).resolve() == path and out.stage.is_data_source is False:
                return f"{path} is written by dvc stage {out.stage.addressing}: repro records it"
        repo.add(str(path))
    meta = (path.parent / f"{path.name}.dvc").read_text()
    md5 = " ".join(line.strip() for line in meta.splitlines() if "md5" in line)
    return f"dvc add {path}: {md5}"
