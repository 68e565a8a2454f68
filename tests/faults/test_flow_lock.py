"""The checkout's flow lock (`pac.pipeline.hold_flow_lock`) against real processes: a live one
blocks with one line, a dead one does not, a resume's origin takes it over, and a release
removes only the releasing run's lock (checked on the file itself)."""

from __future__ import annotations

import json
import socket
import subprocess

import pytest

from pac.pipeline import FlowRunning, hold_flow_lock, release_flow_lock


def _lock(path, run: str, pid: int, host: str | None = None) -> None:
    path.write_text(json.dumps({"run": run, "pid": pid, "host": host or socket.gethostname(),
                                "since": "then"}))


def test_a_live_holder_blocks_a_dead_one_does_not_and_an_origin_takes_over(tmp_path):
    lock = tmp_path / "runs" / "flow.lock"
    live = subprocess.Popen(["sleep", "60"])
    dead = subprocess.Popen(["true"])
    dead.wait()
    try:
        hold_flow_lock("PACFlow/1", live.pid, path=lock)  # no lock yet: created
        assert json.loads(lock.read_text())["run"] == "PACFlow/1"
        with pytest.raises(FlowRunning) as refused:
            hold_flow_lock("PACFlow/2", 4242, path=lock)
        assert str(refused.value) == (
            f"flow run PACFlow/1 is running in this checkout (pid {live.pid} on"
            f" {socket.gethostname()}, since {json.loads(lock.read_text())['since']}): wait"
            f" for it to end, or remove {lock} if that process is gone")
        assert json.loads(lock.read_text())["pid"] == live.pid  # untouched
        # a resume of PACFlow/1 takes over its origin's lock, even while that PID lives
        hold_flow_lock("PACFlow/3", 4343, origins=("PACFlow/1",), path=lock)
        assert json.loads(lock.read_text())["run"] == "PACFlow/3"
        # a live process on another host cannot be checked: it blocks
        _lock(lock, "PACFlow/4", dead.pid, host="elsewhere")
        with pytest.raises(FlowRunning, match="PACFlow/4 is running"):
            hold_flow_lock("PACFlow/5", 4545, path=lock)
        # a dead PID on this host: stale, taken over
        _lock(lock, "PACFlow/4", dead.pid)
        hold_flow_lock("PACFlow/5", 4545, path=lock)
        assert json.loads(lock.read_text())["run"] == "PACFlow/5"
    finally:
        live.kill()
        live.wait()


def test_release_removes_only_its_own_lock_and_an_unreadable_one_is_named(tmp_path):
    lock = tmp_path / "flow.lock"
    _lock(lock, "PACFlow/7", 1)
    assert not release_flow_lock(("PACFlow/8", None), path=lock) and lock.is_file()
    assert release_flow_lock(("PACFlow/8", "PACFlow/7"), path=lock) and not lock.exists()
    assert not release_flow_lock(("PACFlow/7",), path=lock)  # no lock: nothing to do
    lock.write_text("{not json")
    with pytest.raises(FlowRunning, match=f"^{lock} is not a flow lock the pipeline wrote"):
        hold_flow_lock("PACFlow/9", 4646, path=lock)
