"""flows/scaling_flow.py end to end: real Metaflow local runs, a real sqlite MLflow store.

A tiny sweep (2 sizes x PAC, BC+Q x 1 seed, 100 updates, 5 evaluations of one episode each):
(a) runs end to end: a FINISHED nested MLflow run per member, the fit's a, b, N_0, D_0 and
intervals on the parent (as in fit.json), its figures as artefacts and files, and the points
the fit used equal to the members' eval_points.csv read from their folders; (b) the flow is
SIGKILLed after one member finished and another wrote a checkpoint, and `resume` reuses the
finished member (its Metaflow task is a clone of the killed run's, its files are untouched)
and continues the killed member from its checkpoint in its own MLflow run.

Sampled decoding: for the first 150 updates of these tiny models the argmax action is the same
at every checkpoint (measured: 0.306 of expert at every evaluation, flat returns that eq. 18
cannot fit); sampled actions follow the policy as it learns (0.02 -> 0.46 over 100 updates).
The envelope's window is `observed`: with two sizes trained for the same number of updates it
always selects both (the default window may select one, and then eq. 4 has no
fit), so the test does not depend on which tiny model happens to return more.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from flow_helpers import copy_project, flow_env, metaflow_client, run_flow

FLOW = "flows/scaling_flow.py"
SETTINGS = [
    "data.episode_steps=100",
    "data.groups=[{name: expert, tasks: [cartpole.balance], quality: 1.0, episodes_per_task: 4}]",
    "data.trajectory_length=3",
    "train.steps=100", "train.global_batch=8", "train.log_every=10", "train.checkpoint_every=20",
    "train.warmup_steps=3", "train.precision=fp32", "train.eval_episodes=1",
    "loss.target_update_period=10", "loss.num_action_samples=4", "eval.decode=sample",
    "scaling.evaluations=5",
    "scaling.sizes=[{name: a, set: {model.d_z: 32}}, {name: b, set: {}}]",
]
MEMBERS = ["pac-a-seed0", "pac-b-seed0", "bc_q-a-seed0", "bc_q-b-seed0"]
ARGS = ["--set", ";".join(SETTINGS), "--window", "observed", "--bootstrap", "20"]


def _clone(tmp_path: Path) -> Path:
    repo = tmp_path / "clone"
    repo.mkdir()
    copy_project(repo)
    return repo


def _store(repo: Path):
    from pac.config import load_config
    from pac.tracking import client, experiment_id

    cfg = load_config(overrides=[f"tracking.uri=sqlite:///{repo}/mlruns/mlflow.db",
                                 f"tracking.artifact_dir={repo}/mlruns/artifacts"])
    mlc = client(cfg)
    return cfg, mlc, mlc.search_runs([experiment_id(mlc, cfg)])


def _csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


RUN_DATA = (
    "run = list(Flow('ScalingFlow').runs())[0]\n"
    "d = run.data\n"
    "print(json.dumps({'id': run.id, 'ok': run.successful, 'origin': run.origin_pathspec,"
    " 'mlflow': d.mlflow_run_id, 'runs': d.member_runs, 'dirs': d.member_dirs,"
    " 'fit': d.fit_values, 'error': d.fit_error, 'files': d.fit_files,"
    " 'tasks': {t.data.member['name']: [t.pathspec, t.origin_pathspec]"
    " for t in run['train'].tasks()}}))\n"
)


def _check_sweep(repo: Path, got: dict) -> None:
    """(a): the finished sweep's MLflow runs, the points its fit used, the fit and figures."""
    assert got["ok"] and got["error"] is None
    assert sorted(got["runs"]) == sorted(MEMBERS)

    # MLflow: one parent, one FINISHED nested run per member (the ids Metaflow recorded)
    cfg, mlc, every = _store(repo)
    parent = mlc.get_run(got["mlflow"])
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["pac_role"] == "scaling-flow"
    children = {r.info.run_name: r for r in every
                if r.data.tags.get("mlflow.parentRunId") == got["mlflow"]}
    assert sorted(children) == sorted(MEMBERS)
    for name, run in children.items():
        assert run.info.status == "FINISHED"
        assert run.info.run_id == got["runs"][name]
        family, size, _ = name.split("-")
        assert run.data.tags["pac.scaling.family"] == family
        assert run.data.params["loss.variant"] == family
        assert float(run.data.params["loss.alpha"]) == {"pac": 0.75, "bc_q": 1.0}[family]
        assert int(run.data.params["model.d_z"]) == {"a": 32, "b": 64}[size]
    assert "RUNNING" not in {r.info.status for r in every}

    # The points the fit used: every member's eval_points.csv, read from its folder
    owner = (got["origin"] or got["id"]).split("/")[-1]  # a resume writes in its origin's folder
    fit_dir = repo / "runs" / "scaling" / owner / "fit"
    members = {name: _csv(repo / got["dirs"][name] / "eval_points.csv") for name in MEMBERS}
    for name, rows in members.items():
        assert [int(r["step"]) for r in rows] == [20, 40, 60, 80, 100]  # 100 // 5 = 20
        assert {r["run"] for r in rows} == {name}
    used = _csv(fit_dir / "points.csv")
    assert used == [row for name in MEMBERS for row in members[name]]
    profiles = {r["run"]: r for r in _csv(fit_dir / "profiles.csv")}
    assert {k: int(v["points"]) for k, v in profiles.items()} == {n: 5 for n in MEMBERS}

    # The fit on the parent: a, b, N_0, D_0 and intervals per family, as in fit.json
    fit = json.loads((fit_dir / "fit.json").read_text())["families"]
    assert sorted(fit) == ["bc_q", "pac"]
    params, metrics = parent.data.params, parent.data.metrics
    for family, values in fit.items():
        for key, want in (("a", values["a"]), ("b", values["b"]), ("N0", values["N0"]),
                          ("D0", values["D0"]),
                          ("a_ci95_low", values["n_opt"]["ci95"][0]),
                          ("a_ci95_high", values["n_opt"]["ci95"][1]),
                          ("b_ci95_low", values["d_opt"]["ci95"][0]),
                          ("b_ci95_high", values["d_opt"]["ci95"][1])):
            assert float(params[f"{family}.{key}"]) == pytest.approx(want, rel=1e-9)
            assert metrics[f"{family}.{key}"] == pytest.approx(want, rel=1e-9)
            assert got["fit"][f"{family}.{key}"] == pytest.approx(want, rel=1e-9)

    # Figures: artefacts of the parent and files, real PNGs
    from pac.tracking import list_artifacts

    logged = set(list_artifacts(cfg, got["mlflow"], "scaling"))
    for name in ("profiles.png", "scaling.png", "isoreturn.png", "points.csv", "fit.json"):
        assert f"scaling/{name}" in logged
    for name in ("profiles.png", "scaling.png", "isoreturn.png"):
        assert (fit_dir / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert str(fit_dir / name).endswith(tuple(got["files"]))


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.slow
def test_sweep_killed_then_resumed_reuses_members_and_logs_the_fit(tmp_path):
    """(b), then (a) on the resumed run: one flow run pair covers both (the suite's budget)."""
    repo = _clone(tmp_path)
    meta = repo / ".metaflow" / "ScalingFlow"
    log = tmp_path / "run.log"
    with open(log, "w") as fh:
        proc = subprocess.Popen(
            [sys.executable, FLOW, "run", *ARGS, "--max-workers", "1"], cwd=repo,
            env=flow_env(repo), stdout=fh, stderr=subprocess.STDOUT,
            start_new_session=True)  # its own process group: the runtime and its tasks
        try:
            deadline = time.monotonic() + 600
            while True:  # one member task done, the next one past its first checkpoint
                assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
                done = list(meta.glob("*/train/*/0.DONE.lock"))
                started = {p.parts[-4] for p in (repo / "runs" / "scaling").glob(
                    "*/*/checkpoints/step_*/manifest.json")}
                if done and len(started) >= 2:
                    break
                time.sleep(0.05)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    killed_id = done[0].parts[-4]
    finished = metaflow_client(repo, (
        f"run = Flow('ScalingFlow')['{killed_id}']\n"
        "print(json.dumps({t.data.member['name']: [t.pathspec, t.data.member_dir]"
        " for t in run['train'].tasks() if t.successful}))\n"))
    assert 1 <= len(finished) < len(MEMBERS)
    kept = {name: {p.relative_to(repo / d): _sha(p) for p in (repo / d).rglob("*")
                   if p.is_file()} for name, (_, d) in finished.items()}
    interrupted = sorted(started - set(finished))
    assert len(interrupted) == 1
    assert not (repo / "runs" / "scaling" / killed_id / interrupted[0] / "policy").exists()

    resumed = run_flow(repo, "resume", flow=FLOW)
    assert resumed.returncode == 0, (resumed.stdout + resumed.stderr)[-5000:]
    got = metaflow_client(repo, RUN_DATA)
    assert got["ok"] and got["origin"] == f"ScalingFlow/{killed_id}"
    assert got["id"] != killed_id and got["error"] is None
    # the finished members: clones of the killed run's tasks, their files untouched
    for name, (pathspec, folder) in finished.items():
        assert got["tasks"][name][1] == pathspec
        assert got["dirs"][name] == folder
        assert {p.relative_to(repo / folder): _sha(p) for p in (repo / folder).rglob("*")
                if p.is_file()} == kept[name]
    # the others ran again, in the killed run's folders (its flow run owns them)
    for name in set(MEMBERS) - set(finished):
        assert got["tasks"][name][1] is None
        assert got["dirs"][name] == f"runs/scaling/{killed_id}/{name}"

    # MLflow: the interrupted member continued its own run from its checkpoint; one run per
    # member, nothing left RUNNING, one parent
    _, mlc, every = _store(repo)
    assert "RUNNING" not in {r.info.status for r in every}
    named = [r for r in every if r.info.run_name == interrupted[0]
             and r.info.status == "FINISHED"]
    assert [r.info.run_id for r in named] == [got["runs"][interrupted[0]]]
    assert int(named[0].data.tags["pac.resumed_from_update"]) >= 20
    assert [r.data.tags.get("pac_role") for r in every].count("scaling-flow") == 1
    assert mlc.get_run(got["mlflow"]).info.status == "FINISHED"
    finished_runs = {r.info.run_name for r in every if r.info.status == "FINISHED"
                     and r.data.tags.get("mlflow.parentRunId") == got["mlflow"]}
    assert finished_runs == set(MEMBERS)
    _check_sweep(repo, got)
