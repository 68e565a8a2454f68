"""`pac ingest` against careless arguments, symlinks, a second ingest and memory bombs."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from ingest_corpus import lying_zip, make_episode, members_of, tree_digest, write_lerobot

from pac.data import EpisodeStore, store_root
from pac.rlft.ingest import PAUSE_ENV, PROCESSED, QUARANTINE, REASON_CODES, ingest, write_rollout

REPO = Path(__file__).resolve().parents[3]


def _pac_ingest(*args: str) -> int:
    from pac.cli import main

    return main(["ingest", *args, "--no-track", "--no-dvc"])


def _deliver(landing: Path, count: int = 2, seed: int = 0) -> None:
    for i in range(count):
        write_rollout(landing / f"ep{i}.npz", make_episode(seed=seed + i))


# --- LANDING must be a landing folder -------------------------------------------------------------


def test_wrong_landing_arguments_change_nothing_and_exit_2(tmp_path, monkeypatch, capsys):
    repo = tmp_path / "repo"
    data_root = repo / "data"
    _deliver(repo / "data" / "landing")
    assert ingest(repo / "data" / "landing", data_root).episodes_added == 2  # a real store
    dataset = write_lerobot(repo / "incoming" / "arm_v3", [make_episode(steps=6, seed=9)])
    _deliver(repo)  # stray rollout files in the repository root itself
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    dvc_only = tmp_path / "dvc_only"
    _deliver(dvc_only)
    (dvc_only / ".dvc").mkdir()
    monkeypatch.chdir(repo)
    before = tree_digest(tmp_path)

    def refused(*args: str) -> str:
        assert _pac_ingest(*args) == 2, args
        assert tree_digest(tmp_path) == before, f"{args} changed the disk"
        return capsys.readouterr().err

    # the docstring's old example: a LeRobot dataset folder itself
    assert "is itself a LeRobotDataset" in refused(str(dataset), "--data-root", str(data_root))
    assert "mv " in refused(str(dataset), "--data-root", str(data_root))  # the hint
    assert "the data folder" in refused(str(data_root), "--data-root", str(data_root))
    assert "episode store" in refused(str(store_root(data_root)), "--data-root", str(data_root))
    assert "episode store" in refused(str(store_root(data_root) / "rollouts"), "--data-root",
                                      str(data_root))
    assert "root of a git repository" in refused(".", "--data-root", str(tmp_path / "d2"))
    assert "root of a dvc repository" in refused(str(dvc_only), "--data-root",
                                                 str(tmp_path / "d2"))
    assert "is a file, not a landing folder" in refused(str(repo / "ep0.npz"))
    assert "does not exist" in refused(str(repo / "nope"))
    assert len(EpisodeStore(store_root(data_root)).episodes) == 2


@pytest.mark.parametrize("sub", [QUARANTINE, PROCESSED])
def test_symlinked_quarantine_or_processed_is_refused(tmp_path, capsys, sub):
    landing, outside = tmp_path / "landing", tmp_path / "elsewhere"
    outside.mkdir()
    _deliver(landing)
    (landing / "broken.npz").write_bytes(b"not a zip at all")
    (landing / sub).symlink_to(outside)
    before = tree_digest(tmp_path)
    assert _pac_ingest(str(landing), "--data-root", str(tmp_path / "data")) == 2
    assert "symbolic link" in capsys.readouterr().err
    assert tree_digest(tmp_path) == before and not any(outside.iterdir())
    assert not EpisodeStore(store_root(tmp_path / "data")).shards


def test_symlinked_items_are_rejected_unread(tmp_path, capsys):
    """A link to a valid rollout file, to a secret, to a dataset: none is read or ingested."""
    landing, outside = tmp_path / "landing", tmp_path / "outside"
    _deliver(landing, count=1)
    write_rollout(outside / "valid.npz", make_episode(seed=42))
    secret = b"SECRET-TOKEN-0123456789abcdef"
    (outside / "secret.txt").write_bytes(secret)
    write_lerobot(outside / "ds", [make_episode(steps=6, seed=7)])
    os.mkfifo(outside / "fifo")  # opening it for reading would block
    for name, target in [("link.npz", "valid.npz"), ("secret.npz", "secret.txt"),
                         ("ds_link", "ds"), ("fifo.npz", "fifo")]:
        (landing / name).symlink_to(outside / target)
    (landing / "notes.npz").write_bytes(secret + b" robot log\n")  # junk, not a link
    before = tree_digest(outside)
    atimes = {p.name: p.stat().st_atime_ns for p in outside.iterdir() if p.is_file()}

    report = ingest(landing, tmp_path / "data")

    assert report.accepted == ["ep0.npz"]
    assert {k: v.split(":")[0] for k, v in report.rejected.items()} == {
        "link.npz": "symlink", "secret.npz": "symlink", "ds_link": "symlink", "fifo.npz": "symlink",
        "notes.npz": "not-a-rollout"}
    for name in set(report.rejected) - {"notes.npz"}:  # the link itself is quarantined
        assert (landing / QUARANTINE / name).is_symlink()
    assert tree_digest(outside) == before  # nothing written, moved or added outside LANDING
    assert {p.name: p.stat().st_atime_ns for p in outside.iterdir() if p.is_file()} == atimes
    texts = [p.read_bytes() for p in (landing / QUARANTINE).glob("*.reason.txt")]
    texts += [p.read_bytes() for p in (landing / PROCESSED).glob("ingest-*.json")]
    assert not any(secret[:8] in t for t in texts)  # no file's bytes are echoed in a reason
    assert not (set(os.listdir(landing)) - {QUARANTINE, PROCESSED})


def test_symlink_inside_a_dataset_rejects_it_without_reading_the_target(tmp_path):
    landing, outside = tmp_path / "landing", tmp_path / "outside"
    outside.mkdir()
    root = write_lerobot(landing / "ds", [make_episode(steps=6, seed=i) for i in range(2)])
    info = root / "meta" / "info.json"
    info.rename(outside / "info.json")
    info.symlink_to(outside / "info.json")
    report = ingest(landing, tmp_path / "data")
    assert report.rejected["ds"] == "symlink: meta/info.json is a symbolic link: not followed"
    assert (landing / QUARANTINE / "ds" / "meta" / "info.json").is_symlink()
    assert not EpisodeStore(store_root(tmp_path / "data")).shards


# --- one ingest at a time -------------------------------------------------------------------------


def _start(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "pac.cli", "ingest", *args, "--no-track", "--no-dvc"],
        cwd=REPO, env=dict(os.environ, **(env or {})), text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )


def _wait_for(stream, text: str) -> str:
    """Read lines of `stream` until one contains `text` (EOF first fails the test)."""
    seen = []
    for line in stream:
        seen.append(line)
        if text in line:
            return line
    raise AssertionError(f"never printed {text!r}: {''.join(seen)[-2000:]}")


def test_two_concurrent_ingests_add_the_delivery_once(tmp_path):
    """A holds the locks (paused before its commit); B on the same landing folder and C on a
    copy of the same delivery (other names) start meanwhile, wait, and then add nothing."""
    landing, copy, data_root = tmp_path / "landing", tmp_path / "landing2", tmp_path / "data"
    _deliver(landing, count=3)
    copy.mkdir()
    for p in landing.iterdir():
        (copy / f"resent_{p.name}").write_bytes(p.read_bytes())
    release = tmp_path / "release"
    a = _start(str(landing), "--data-root", str(data_root),
               env={PAUSE_ENV: f"before_commit:120:{release}"})
    b = c = None
    try:
        _wait_for(a.stdout, "ingest: pausing at before_commit")
        b = _start(str(landing), "--data-root", str(data_root))
        assert "the landing folder" in _wait_for(b.stderr, "ingest: waiting for")
        c = _start(str(copy), "--data-root", str(data_root))
        assert "the episode store" in _wait_for(c.stderr, "ingest: waiting for")
        release.touch()
        outs = [p.communicate(timeout=120) for p in (a, b, c)]
    finally:
        for p in (a, b, c):
            if p is not None and p.poll() is None:
                p.kill()
    reports = [json.loads(out[out.index("{"):]) for out, _ in outs]
    print(f"\nA added {reports[0]['episodes_added']}, B {reports[1]['episodes_added']},"
          f" C {reports[2]['episodes_added']} (C rejected {reports[2]['rejected']} duplicates)")
    assert [a.returncode, b.returncode, c.returncode] == [0, 0, 1]
    assert [r["episodes_added"] for r in reports] == [3, 0, 0]
    assert reports[2]["rejected"] == 3  # the copy: duplicates, found in the ledger read under lock
    eps = EpisodeStore(store_root(data_root), verify=True).episodes
    assert sorted(eps["origin"]) == ["ep0.npz", "ep1.npz", "ep2.npz"]
    assert eps["content_hash"].is_unique


# --- bounded memory -------------------------------------------------------------------------------

_MEASURE = """
import json, resource, sys
from pac.rlft.ingest import ingest
report = ingest(sys.argv[1], sys.argv[2])
peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"peak_mb": peak_mb, "accepted": report.accepted, "rejected": report.rejected}))
"""


def test_inflating_members_are_refused_in_bounded_memory(tmp_path):
    landing = tmp_path / "landing"
    landing.mkdir()
    ep = make_episode(seed=3)
    big = 200 << 20  # each of these inflates to 200 MB
    (landing / "meta_200mb.npz").write_bytes(
        lying_zip(members_of(ep), "meta.json", big, declared=big))
    (landing / "meta_lies.npz").write_bytes(
        lying_zip(members_of(ep), "meta.json", big, declared=1000))
    (landing / "member_lies.npz").write_bytes(
        lying_zip(members_of(ep), "proprio.npy", big, declared=1000))
    write_rollout(landing / "good.npz", make_episode(seed=4))
    assert sum(p.stat().st_size for p in landing.iterdir()) < 8 << 20  # small on disk

    # Linux carries ru_maxrss over exec from the forking process; a small sh forks the measured
    # Python, so its peak is its own and not this (large) pytest process's
    cmd = [sys.executable, "-c", _MEASURE, str(landing), str(tmp_path / "data")]
    out = subprocess.run(["sh", "-c", '"$@"; status=$?; exit $status', "sh", *cmd],
                         cwd=REPO, capture_output=True, text=True, timeout=300, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"\npeak RSS {result['peak_mb']:.0f} MB; {result['rejected']}")
    assert result["accepted"] == ["good.npz"]
    assert {k: v.split(":")[0] for k, v in result["rejected"].items()} == {
        "meta_200mb.npz": "too-large", "meta_lies.npz": "truncated", "member_lies.npz": "truncated"}
    assert result["peak_mb"] < 300


# --- codes, exit status, paths --------------------------------------------------------------------


def test_documented_reason_codes_are_the_codes_in_the_code():
    doc = (REPO / "docs" / "rollout_format.md").read_text()
    table = re.findall(r"^\| `([a-z-]+)` \|", doc, flags=re.M)
    assert table == list(REASON_CODES)
    source = "".join(p.read_text() for p in (REPO / "pac" / "rlft" / "ingest").glob("*.py"))
    raised = set(re.findall(r'Rejected\(\s*"([a-z-]+)"', source))
    assert raised == set(REASON_CODES)  # every documented code is raised, none undocumented


def test_exit_0_when_all_is_accepted_or_already_known(tmp_path, capsys):
    from pac.cli import main

    with pytest.raises(SystemExit):
        main(["ingest", "--help"])
    assert "exit status: 0 every item accepted or already ingested; 1 something was" in \
        " ".join(capsys.readouterr().out.split())
    landing, data_root = tmp_path / "landing", str(tmp_path / "data")
    _deliver(landing)
    assert _pac_ingest(str(landing), "--data-root", data_root) == 0
    (landing / "ep0.npz").write_bytes((landing / PROCESSED / "ep0.npz").read_bytes())
    assert _pac_ingest(str(landing), "--data-root", data_root) == 0  # already ingested
    assert len(EpisodeStore(store_root(data_root)).episodes) == 2


def test_reasons_quote_where_the_item_is_now(tmp_path):
    """A reason naming a file inside the item (here: a folder where meta/tasks.parquet should
    be) names it where it is now, in quarantine/, not where it was delivered."""
    landing = tmp_path / "landing"
    root = write_lerobot(landing / "ds", [make_episode(steps=6, seed=1)])
    tasks = root / "meta" / "tasks.parquet"
    tasks.unlink()
    tasks.mkdir()  # a folder named like the tasks file: reading it fails with an OSError
    report = ingest(landing, tmp_path / "data")
    reason = report.rejected["ds"]
    assert str(landing / QUARANTINE / "ds") in reason, reason
    assert str(landing / "ds") + "/" not in reason.replace(str(landing / QUARANTINE), "")
    assert reason in (landing / QUARANTINE / "ds.reason.txt").read_text()


def test_an_item_vanishing_mid_batch_does_not_stop_it(tmp_path, monkeypatch):
    """A robot deletes a file between the listing and its parsing: that item is reported,
    the rest of the batch is committed."""
    import pac.rlft.ingest.landing as landing_module

    landing = tmp_path / "landing"
    _deliver(landing)
    write_rollout(landing / "gone.npz", make_episode(seed=99))
    parse = landing_module.parse_item

    def delete_first(path: Path):
        if path.name == "gone.npz":
            path.unlink()
        return parse(path)

    monkeypatch.setattr(landing_module, "parse_item", delete_first)
    report = ingest(landing, tmp_path / "data")
    assert report.accepted == ["ep0.npz", "ep1.npz"]
    assert report.rejected["gone.npz"].startswith("unreadable: FileNotFoundError")
    assert "(not moved: FileNotFoundError" in report.rejected["gone.npz"]
    assert len(EpisodeStore(store_root(tmp_path / "data")).episodes) == 2
