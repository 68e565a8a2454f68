"""One flow run through three faults, in one checkout (a fresh copy of the project):

1. a stale `runs/flow.lock` (a dead PID) is there before flow run A starts: it does not block;
2. while A runs, flow run B is started in the same checkout: B fails in `start` with one line
   naming A, opens no MLflow run and writes no output folder, and A's lock is untouched;
3. A is SIGKILLed (runtime and tasks) inside `evaluate`, once its `eval-point_mass` run exists;
4. `resume` (A') is SIGKILLed inside the RLFT round's ingest, after the rollouts were committed
   to the store and before the landing folder was tidied (PAC_INGEST_PAUSE=after_commit);
5. a second `resume` (A'') finishes.

Checked against independent records: the Metaflow client (which tasks were cloned), the MLflow
store, the episode store's own index and the bytes the uninterrupted `pretrain` wrote before the
first kill. One scenario for all checks: each flow run costs tens of seconds on 2 cores.
"""

from __future__ import annotations

import hashlib
import json
import re
import socket
import subprocess
from pathlib import Path

import pytest
from flow_helpers import (
    TINY_FLOW,
    copy_project,
    kill_flow_when,
    metaflow_client,
    run_flow,
    start_flow,
    store_runs,
)

#: TINY_FLOW with one RLFT round of 2 rollouts and 2 fine-tuning updates.
SETTINGS = [s for s in TINY_FLOW if not s.startswith("rlft.")] + [
    "rlft.rounds=1", "rlft.episodes_per_task=2", "rlft.finetune_steps=2"]
ROLLOUTS = 2  # rlft.episodes_per_task x rlft.tasks (point_mass.easy)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def scenario(tmp_path_factory) -> dict:
    from pac.pipeline import read_flow_lock

    tmp = tmp_path_factory.mktemp("kills")
    repo = tmp / "clone"
    repo.mkdir()
    copy_project(repo)
    lock = repo / "runs" / "flow.lock"
    gone = subprocess.Popen(["true"])
    gone.wait()  # a PID that no longer runs
    lock.parent.mkdir(parents=True)
    lock.write_text(json.dumps({"run": "PACFlow/1", "pid": gone.pid,
                                "host": socket.gethostname(), "since": "earlier"}))
    got: dict = {"repo": repo}

    log_a = tmp / "a.log"
    proc = start_flow(repo, log_a, "run", "--set", ";".join(SETTINGS))
    state: dict = {}

    def second_run_refused() -> None:
        if not any("/start/1 (pid" in ln and "Task finished successfully" in ln
                   for ln in log_a.read_text().splitlines()):
            return  # A's start (the lock, the MLflow store and parent run) not done
        holder = read_flow_lock(lock)
        got["lock_a"], got["runtime_pid"] = holder, proc.pid
        got["b"] = run_flow(repo, "run", "--set", ";".join(SETTINGS))
        got["lock_after_b"] = read_flow_lock(lock)
        got["runs_after_b"] = [(r.info.run_name, r.data.tags.get("metaflow.run_id"))
                               for r in store_runs(repo)]
        got["run_b"] = re.search(r"run-id (\d+)", got["b"].stdout + got["b"].stderr)[1]

    def evaluation_run_open() -> bool:
        if "b" not in got:  # B first, while A runs
            second_run_refused()
            return False
        record = next((repo / "runs" / "flow").glob("*/eval/point_mass/mlflow_run.json"), None)
        if record is None:
            return False
        try:
            state["record"] = json.loads(record.read_text())
        except ValueError:  # cannot happen (atomic write); read again
            return False
        return True

    kill_flow_when(proc, log_a, evaluation_run_open)
    run_a = got["lock_a"]["run"].split("/")[1]
    got["run_a"], got["eval_record"] = run_a, state["record"]
    got["killed_eval"] = {r.info.run_id: r.info.status for r in store_runs(repo)
                          if r.info.run_name == "eval-point_mass"}
    policy = repo / "runs" / "flow" / run_a / "pretrain" / "policy" / "model.safetensors"
    got["policy_sha"] = _sha(policy)  # what the uninterrupted pretrain step wrote

    log_r = tmp / "resume1.log"
    # `resume` alone would resume the latest run: B, refused at its start
    proc = start_flow(repo, log_r, "resume", "--origin-run-id", run_a,
                      PAC_INGEST_PAUSE="after_commit:300")
    kill_flow_when(proc, log_r, lambda: "ingest: pausing at after_commit" in log_r.read_text())
    got["lock_resume1"] = read_flow_lock(lock)
    got["resume1_pid"] = proc.pid
    got["log_a"], got["log_resume1"] = log_a.read_text(), log_r.read_text()
    got["resume1"] = re.search(r"run-id (\d+)", got["log_resume1"])[1]
    got["final"] = run_flow(repo, "resume", "--origin-run-id", got["resume1"])
    got["lock_at_end"] = lock.exists()
    return got


def _final(scenario) -> dict:
    assert scenario["final"].returncode == 0, (
        scenario["final"].stdout + scenario["final"].stderr)[-5000:]
    return metaflow_client(scenario["repo"], (
        f"flow = Flow('PACFlow')\n"
        f"resume1, a = flow['{scenario['resume1']}'], flow['{scenario['run_a']}']\n"
        "final = next(r for r in flow if r.origin_pathspec == resume1.pathspec)\n"
        "cloned = lambda run: {s.id: all({m.name: m.value for m in t.metadata}"
        ".get('origin-task-id') for t in s) for s in run}\n"
        "print(json.dumps({'ok': final.successful, 'ids': [final.id, resume1.id, a.id],"
        " 'origins': [final.origin_pathspec, resume1.origin_pathspec],"
        " 'cloned': cloned(final), 'mlflow': final.data.mlflow_run_id,"
        " 'eval_runs': final.data.eval_runs, 'policy': final.data.policy_dir}))\n"))


@pytest.mark.slow
def test_a_stale_lock_does_not_block_and_a_second_run_is_refused_at_start(scenario):
    lock_a = scenario["lock_a"]
    # A took the stale lock over; the PID it records is the Metaflow runtime's (the process
    # `python flows/pac_flow.py run` started), not the task's
    assert lock_a["pid"] == scenario["runtime_pid"] and lock_a["host"] == socket.gethostname()
    b = scenario["b"]
    assert b.returncode != 0
    line = (f"pac: flow run PACFlow/{scenario['run_a']} is running in this checkout"
            f" (pid {lock_a['pid']} on {lock_a['host']}, since {lock_a['since']}): wait for it"
            f" to end, or remove runs/flow.lock if that process is gone")
    # one line (Metaflow prefixes a task's lines with its pathspec and PID)
    assert any(ln.endswith(line) for ln in (b.stdout + b.stderr).splitlines()), (
        b.stdout + b.stderr)[-5000:]
    assert scenario["lock_after_b"] == lock_a  # B left A's lock alone
    # B opened no MLflow run (every run so far is A's) and never made an output folder
    assert scenario["runs_after_b"] and {rid for _, rid in scenario["runs_after_b"]
                                         if rid} == {scenario["run_a"]}
    assert sorted(p.name for p in (scenario["repo"] / "runs" / "flow").iterdir()) == [
        scenario["run_a"]]
    print("\n" + (b.stdout + b.stderr)[-1500:])


@pytest.mark.slow
def test_sigkill_inside_evaluation_then_resume_leaves_one_finished_eval_run(scenario):
    got = _final(scenario)
    final, resume1, a = got["ids"]
    assert got["ok"] and got["origins"] == [f"PACFlow/{resume1}", f"PACFlow/{a}"]
    assert a == scenario["run_a"]
    # the killed eval run: opened and recorded, not yet closed (or closed just before the kill)
    recorded = scenario["eval_record"]["runs"]["eval-point_mass"]
    print(f"\neval-point_mass at the kill: {scenario['killed_eval']}")
    assert scenario["killed_eval"].get(recorded) in ("RUNNING", "FINISHED")
    every = store_runs(scenario["repo"])
    assert "RUNNING" not in {r.info.status for r in every}, [
        (r.info.run_name, r.info.status) for r in every]
    flow_evals = [r for r in every if r.info.run_name.startswith("eval-")
                  and r.data.tags.get("mlflow.parentRunId") == got["mlflow"]]
    finished = [r.info.run_id for r in flow_evals if r.info.status == "FINISHED"]
    assert finished == [recorded]  # the killed attempt's run, continued by id
    assert got["eval_runs"] == {"eval-point_mass": recorded}
    for r in flow_evals:  # any other: an unrecorded one, ended KILLED and linked
        assert r.info.run_id == recorded or (
            r.info.status == "KILLED" and r.data.tags["pac.continued_in"] == recorded)
    assert [r.data.tags.get("pac_role") for r in every].count("flow") == 1
    # the handed-over pretrained policy: the bytes the uninterrupted pretrain step wrote
    assert got["cloned"]["pretrain"] and not got["cloned"]["end"]
    assert _sha(scenario["repo"] / got["policy"] / "model.safetensors") == scenario["policy_sha"]
    assert not scenario["lock_at_end"]  # released by `end`


@pytest.mark.slow
def test_sigkill_inside_ingestion_then_resume_holds_each_rollout_once(scenario):
    from pac.config import load_config
    from pac.data import EpisodeStore, store_root
    from pac.rlft.ingest import PROCESSED, SUFFIX

    got = _final(scenario)
    repo = scenario["repo"]
    assert "ingest: pausing at after_commit" in scenario["log_resume1"]
    # the first resume took the lock over from the killed run A (its origin)
    assert scenario["lock_resume1"]["run"] == f"PACFlow/{got['ids'][1]}"
    assert scenario["lock_resume1"]["pid"] == scenario["resume1_pid"]
    cfg = load_config(overrides=SETTINGS)
    eps = EpisodeStore(store_root(repo / cfg.data.root), verify=True).episodes
    rollouts = eps[eps["group"] == "rollouts"]
    # each collected rollout once: as many episodes as rollout files the robot wrote
    landing = repo / "runs" / "flow" / scenario["run_a"] / "rlft" / "rounds" / "round_1" / "landing"
    files = sorted(p.name for p in (landing / PROCESSED).glob(f"*{SUFFIX}"))
    assert len(files) == ROLLOUTS and not list(landing.glob(f"*{SUFFIX}"))
    assert sorted(rollouts["origin"]) == files and rollouts["content_hash"].is_unique
    assert len(list((landing / PROCESSED).glob("ingest-*.json"))) == 1  # the kill wrote none
    every = store_runs(repo)
    names = sorted(r.info.run_name for r in every if r.info.run_name.startswith("rlft"))
    assert names == ["rlft", "rlft-round-0", "rlft-round-1"]
    for r in every:  # FINISHED, or an unrecorded run of a killed attempt ended and linked
        assert r.info.status == "FINISHED" or (
            r.info.status == "KILLED" and "pac.continued_in" in r.data.tags), r.info.run_name
