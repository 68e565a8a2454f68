"""Robot-rollout ingestion (§4.3): landing folder -> validated episodes -> the episode store.

A robot (or its dm_control stand-in, ``pac rollout``) drops one file per episode, or a
LeRobotDataset v3.0 folder, into a landing folder; ``pac ingest LANDING`` reads every item
without executing code (no pickle, no symlink followed, bounded reads), validates each episode
against its task's spec, drops duplicates by content hash, quarantines what is rejected with its
reason and commits the rest atomically. The seams, one module each:

* :mod:`pac.rlft.ingest.checks`: episode validation and the reason codes (every format);
* :mod:`pac.rlft.ingest.rollout_file`: the project's per-episode rollout file
  (docs/rollout_format.md);
* :mod:`pac.rlft.ingest.lerobot`: the LeRobotDataset v3.0 reader;
* :mod:`pac.rlft.ingest.landing`: the landing-folder guard, lock, ledger, quarantine and commit.
"""

from pac.rlft.ingest.checks import (
    ACTION_TOLERANCE,
    MAX_JSON_BYTES,
    MAX_JSON_DEPTH,
    MIN_STEPS,
    REASON_CODES,
    Rejected,
    content_hash,
    sparse_rewards,
    validate_episode,
)
from pac.rlft.ingest.landing import (
    LOCK_WAIT_S,
    PAUSE_ENV,
    PROCESSED,
    QUARANTINE,
    ROLLOUT_GROUP,
    IngestRefused,
    IngestReport,
    check_landing,
    dvc_track,
    ingest,
    landing_items,
    log_ingest,
    parse_item,
    quarantine,
    read_ledger,
)
from pac.rlft.ingest.lerobot import discounts_from_done, is_lerobot_dir, read_lerobot
from pac.rlft.ingest.rollout_file import (
    FORMAT,
    MAX_MEMBER_BYTES,
    SUFFIX,
    VERSION,
    read_rollout,
    write_rollout,
)

__all__ = [
    "ACTION_TOLERANCE", "FORMAT", "LOCK_WAIT_S", "MAX_JSON_BYTES", "MAX_JSON_DEPTH",
    "MAX_MEMBER_BYTES", "MIN_STEPS", "PAUSE_ENV", "PROCESSED", "QUARANTINE", "REASON_CODES",
    "ROLLOUT_GROUP", "SUFFIX", "VERSION", "IngestRefused", "IngestReport", "Rejected",
    "check_landing", "content_hash", "discounts_from_done", "dvc_track", "ingest",
    "is_lerobot_dir", "landing_items", "log_ingest", "parse_item", "quarantine", "read_ledger",
    "read_lerobot", "read_rollout", "sparse_rewards", "validate_episode", "write_rollout",
]
