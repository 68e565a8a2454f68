"""End to end: `python flows/pac_flow.py run` in a fresh copy of the project, then `resume`
after a forced failure in a late step, the Metaflow client, and a real MLflow server's REST API.

One flow run (tiny budgets) is shared by the module: data (dvc repro) -> DeepSpeed pretraining
-> per-domain evaluation -> one RLFT round -> model card. The RLFT step is made to fail first
(its output folder is a file), then `resume` must reuse every earlier step and finish.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from flow_helpers import ROOT, copy_project, flow_env, metaflow_client, run_flow

BUDGET = ";".join([
    "train.steps=20", "train.checkpoint_every=10", "train.log_every=5",
    "eval.episodes_per_task=2", "eval.videos_per_task=1",
    "rlft.episodes_per_task=2", "rlft.finetune_steps=10", "eval.bc_baseline=true",
])


@pytest.fixture(scope="module")
def flow_repo(tmp_path_factory) -> dict:
    repo = tmp_path_factory.mktemp("clone")
    copy_project(repo)
    blocker = repo / "blocked"
    blocker.write_text("a file where the RLFT step wants a folder: forces a late failure\n")
    first = run_flow(repo, "run", "--set", f"{BUDGET};rlft.out_dir=blocked/rlft", "--rounds", "1")
    blocker.unlink()
    second = run_flow(repo, "resume")
    return {"repo": repo, "first": first, "second": second}


@pytest.mark.parametrize("args, message", [
    (("--set", "loss.alpha=2.0"), "loss.alpha=2.0 is outside the allowed range [0, 1]"),
    (("--alpha", "-0.5"), "loss.alpha=-0.5 is outside the allowed range [0, 1]"),
    (("--rounds", "-2"), "rlft.rounds=-2 is outside the allowed range [0, inf]"),
])
def test_bad_params_fail_before_any_compute_with_one_line(tmp_path, args, message):
    copy_project(tmp_path)
    out = run_flow(tmp_path, "run", *args)
    assert out.returncode == 2
    assert out.stderr.strip() == f"pac: invalid params: {message}", out.stderr[-2000:]
    assert "Traceback" not in out.stdout + out.stderr
    assert not (tmp_path / "data" / "episodes" / "expert").exists()
    assert not (tmp_path / "runs").exists() and not (tmp_path / ".metaflow").exists()


def test_late_failure_then_resume_reuses_earlier_steps(flow_repo):
    first, second = flow_repo["first"], flow_repo["second"]
    assert first.returncode != 0, (first.stdout + first.stderr)[-3000:]
    assert second.returncode == 0, (second.stdout + second.stderr)[-5000:]
    assert "PAC flow finished" in second.stdout + second.stderr
    # What each task of the two runs was, from Metaflow's own metadata (the scheduler's log
    # lines interleave when it clones tasks in parallel threads).
    got = metaflow_client(flow_repo["repo"], (
        "resumed, failed = list(Flow('PACFlow').runs())[:2]\n"
        "steps = lambda run: {s.id: [{m.name: m.value for m in t.metadata}.get('origin-task-id')"
        " for t in s] for s in run}\n"
        "print(json.dumps({'resumed': resumed.id, 'failed': failed.id, 'origin':"
        " resumed.origin_pathspec, 'ok': [resumed.successful, failed.successful],"
        " 'failed_steps': {s.id: [t.successful for t in s] for s in failed},"
        " 'steps': steps(resumed)}))\n"
    ))
    assert got["ok"] == [True, False]
    assert got["origin"] == f"PACFlow/{got['failed']}"
    assert got["failed_steps"]["rlft"] == [False]  # the failure came late: in rlft
    earlier = ("start", "data", "pretrain", "evaluate_split", "evaluate", "evaluate_join")
    for step in earlier:  # every earlier task was cloned from the failed run, none ran again
        assert got["steps"][step] and all(got["steps"][step]), (step, got["steps"])
        assert all(got["failed_steps"][step]), step
    assert len(got["steps"]["evaluate"]) == 4  # one clone per domain branch and the BC arm
    for step in ("rlft", "end"):  # these ran for real in the resumed run
        assert got["steps"][step] == [None], (step, got["steps"])


def test_a_fresh_clone_stays_clean_after_the_flow(flow_repo):
    """dvc.lock matches dvc.yaml and the code: `dvc repro` inside the flow rewrites nothing that
    git tracks, and every output is ignored (only the test's own blocker folder remains)."""
    status = subprocess.run(["git", "status", "--porcelain"], cwd=flow_repo["repo"],
                            capture_output=True, text=True, check=True).stdout.splitlines()
    assert [line for line in status if line != "?? blocked/"] == []


def test_metaflow_client_reads_the_artifacts(flow_repo):
    repo = flow_repo["repo"]
    got = metaflow_client(repo, (
        "run = Flow('PACFlow').latest_run\n"
        "d = run.data\n"
        "print(json.dumps({'ok': run.successful, 'mlflow': d.mlflow_run_id,"
        " 'card': d.model_card, 'table': d.eval_table, 'rounds': len(d.rlft_rows),"
        " 'version': d.registered_version, 'data': d.data_version}, default=str))\n"
    ))
    assert got["ok"] is True
    assert len(got["mlflow"]) == 32
    assert "cartpole.balance" in got["table"] and "Wilson" in got["table"]
    assert got["rounds"] == 2  # round 0 (pretrained) and round 1
    card = (repo / got["card"]).read_text()
    assert card.startswith(f"# Model card: pac-policy v{got['version']}\n")
    assert "## Evaluation of this version" in card
    for field in ("parameters (policy + value)", "GPU count", "training duration", "licence",
                  "year", "data version", "alpha", "Evaluation", "RL fine-tuning rounds"):
        assert field in card, field
    assert any(k.startswith("data/episodes") for k in got["data"])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post(base: str, path: str, body: dict) -> dict:
    req = urllib.request.Request(f"{base}{path}", json.dumps(body).encode(),
                                 {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.load(r)


def _get(base: str, path: str) -> dict:
    with urllib.request.urlopen(f"{base}{path}", timeout=30) as r:
        return json.load(r)


def _expected_headline(repo: Path) -> tuple[str, dict]:
    """The flow's headline as read from its evaluation files: the "all" row of the merged
    evaluation (a pretrained champion) or of the champion round's evaluation, formatted as
    'rate [low, high] (successes/episodes episodes)'; and that row."""
    folder = repo / metaflow_client(repo, (
        "d = Flow('PACFlow').latest_run.data\n"
        "bc = (d.arms or {}).get('tags', {}).get('pac.handed_over_arm') == 'BC'\n"
        "e = d.config['eval']['out_dir'] + ('/bc' if bc else '')\n"
        "print(json.dumps(e if d.champion_round == 0 else"
        " next(r['eval_dir'] for r in d.rlft_rows if r['round'] == d.champion_round)))"))
    every = json.loads((folder / "metrics.json").read_text())["train"]["all"]
    successes = round(every["success_rate"] * every["episodes"] / 100)
    return (f"{every['success_rate']:.1f} [{every['success_low']:.1f},"
            f" {every['success_high']:.1f}] ({successes}/{every['episodes']} episodes)"), every


def test_mlflow_server_shows_parent_nested_runs_params_and_artifacts(flow_repo):
    repo = flow_repo["repo"]
    port = _free_port()
    mlflow = Path(sys.executable).parent / "mlflow"
    server = subprocess.Popen(
        [str(mlflow), "server", "--backend-store-uri", f"sqlite:///{repo}/mlruns/mlflow.db",
         "--default-artifact-root", str(repo / "mlruns" / "artifacts"),
         "--host", "127.0.0.1", "--port", str(port), "-w", "1"],
        cwd=repo, env=flow_env(repo), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(f"{base}/health", timeout=2)
                break
            except OSError:
                time.sleep(1)
        api = f"{base}/api/2.0/mlflow"
        exps = _post(api, "/experiments/search", {"max_results": 50})["experiments"]
        exp = next(e for e in exps if e["name"] == "pac")["experiment_id"]
        runs = _post(api, "/runs/search", {"experiment_ids": [exp], "max_results": 200})["runs"]
        tags = [{t["key"]: t["value"] for t in r["data"].get("tags", [])} for r in runs]
        parents = [r for r, t in zip(runs, tags) if t.get("pac_role") == "flow"]
        assert len(parents) == 1
        parent = parents[0]
        pid = parent["info"]["run_id"]
        ptags = {t["key"]: t["value"] for t in parent["data"]["tags"]}
        assert ptags["metaflow.pathspec"].startswith("PACFlow/")
        params = {p["key"]: p["value"] for p in parent["data"]["params"]}
        for key in ("loss.alpha", "loss.beta", "loss.eta", "rlft.alpha", "rlft.beta",
                    "data.groups.low_quality.quality", "data.groups.expert.weight"):
            assert key in params, key
        children = [r for r, t in zip(runs, tags) if t.get("mlflow.parentRunId") == pid]
        names = {r["info"]["run_name"] for r in children}
        assert names == {"pretrain-tiny", "eval-cartpole", "eval-point_mass", "eval-reacher",
                         "rlft", "pretrain-bc-tiny", "eval-bc"}, names  # + eval.bc_baseline
        evals = [r for r in children if r["info"]["run_name"].startswith("eval-")]
        for run in evals:  # the same metric keys on every evaluation run: chartable together
            keys = {m["key"] for m in run["data"]["metrics"]}
            assert {"success_rate", "success_low", "success_high", "pct_expert"} <= keys
            assert not any("." in k.split("/")[-1] for k in keys), keys  # no task in a key
        metrics = {m["key"]: m["value"] for m in parent["data"]["metrics"]}
        for key in ("success_rate", "success_low", "success_high", "pct_expert",
                    "pct_expert_low", "pct_expert_high", "champion_version",
                    "round_success_rate"):
            assert key in metrics, key
        assert "mlflow.note.content" in ptags and ptags["pac.git_dirty"] in ("true", "false")
        # one headline: the evaluation files' all-task number in the tags, metrics, description
        text, every = _expected_headline(repo)
        assert ptags["pac.success"] == text and metrics["episodes"] == every["episodes"]
        assert metrics["success_rate"] == round(every["success_rate"], 4)
        assert text in ptags["mlflow.note.content"]
        versions = _get(api, f"/model-versions/search?filter=run_id%3D%27{pid}%27")
        assert {v["version"] for v in versions["model_versions"]} >= {
            ptags["pac.champion_version"]}  # listed under the parent's "Registered models"
        with urllib.request.urlopen(f"{base}/get-artifact?run_uuid={pid}&path=evaluation/"
                                    "results_table.json", timeout=30) as r:
            table = json.load(r)
        names = [tuple(row[table["columns"].index(c)] for c in ("section", "level", "name"))
                 for row in table["data"]]
        assert len(names) == len(set(names))  # every row once
        files = _get(api, f"/artifacts/list?run_id={evals[0]['info']['run_id']}&path=eval")
        paths = {f["path"] for f in files.get("files", [])}
        assert {"eval/results.md", "eval/results.csv"} <= paths
        videos = _get(api, f"/artifacts/list?run_id={evals[0]['info']['run_id']}"
                           "&path=eval/videos")
        assert videos.get("files"), "no evaluation video logged"
        child_videos = {f["path"].rsplit("/", 1)[1] for run in evals for f in _get(
            api, f"/artifacts/list?run_id={run['info']['run_id']}&path=eval/videos")["files"]}
        on_parent = _get(api, f"/artifacts/list?run_id={pid}&path=evaluation/videos")
        assert {f["path"].rsplit("/", 1)[1] for f in on_parent.get("files", [])} == child_videos
        top = _get(api, f"/artifacts/list?run_id={pid}")
        top_paths = {f["path"] for f in top.get("files", [])}
        assert {"model_card.md", "evaluation", "figures"} <= top_paths
        figures = _get(api, f"/artifacts/list?run_id={pid}&path=figures")
        assert {f["path"] for f in figures["files"]} == {
            "figures/learning_curves.png", "figures/success.png", "figures/rlft_rounds.png"}
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)


#: Where the browser test copies its screenshots (git-ignored), besides pytest's tmp folder.
SCREENSHOTS = ROOT / "runs" / "test-artifacts" / "review"


@pytest.mark.skipif(shutil.which("chromium") is None, reason="needs Debian's chromium")
def test_mlflow_ui_in_a_real_browser_shows_the_review(flow_repo, tmp_path):
    """The parent run page, a figure, the registered model and its champion version, rendered
    by headless Chromium from a loopback `mlflow server` over the flow's store."""
    from pac.config import load_config
    from pac.review.browser import review_screenshots

    repo = flow_repo["repo"]
    cfg = load_config(overrides=[f"tracking.uri=sqlite:///{repo}/mlruns/mlflow.db",
                                 f"tracking.artifact_dir={repo}/mlruns/artifacts"])
    seen = review_screenshots(cfg, tmp_path / "screenshots", cwd=repo)
    version = metaflow_client(
        repo, "print(json.dumps(Flow('PACFlow').latest_run.data.registered_version))")
    assert seen["champion_version"] == str(version)
    # the headline the page showed is the handed-over policy's result over every episode it was
    # evaluated on
    text, every = _expected_headline(repo)
    assert seen["headline"] == text
    assert seen["episodes"] == every["episodes"]
    # eval.bc_baseline: the page shows PAC beside BC and which was handed over, as the flow
    # decided it (BC's success over all episodes, from its own evaluation folder)
    arms = metaflow_client(repo, "print(json.dumps(Flow('PACFlow').latest_run.data.arms))")
    assert seen["arms"] == arms["tags"]["pac.arms_decision"]
    bc_dir = repo / metaflow_client(
        repo, "print(json.dumps(Flow('PACFlow').latest_run.data.config['eval']['out_dir']))")
    bc_all = json.loads((bc_dir / "bc" / "metrics.json").read_text())["train"]["all"]
    assert seen["bc_success_rate"] == pytest.approx(bc_all["success_rate"], abs=1e-3)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    for name, path in seen["screenshots"].items():
        data = Path(path).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000, name  # not blank
        shutil.copy2(path, SCREENSHOTS / Path(path).name)
    print(f"\nscreenshots: {SCREENSHOTS}")
