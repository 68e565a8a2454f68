"""Running the flows in tests: a fresh copy of the project, a user's environment, the Metaflow
client (shared by tests/test_flow.py, tests/faults/ and tests/scaling/)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: The smallest flow: one task (one evaluation branch), 20 tiny updates, no RLFT round
#: (tests/faults).
TINY_FLOW = [
    "data.episode_steps=25",
    "data.groups=[{name: expert, tasks: [point_mass.easy], quality: 1.0, episodes_per_task: 4}]",
    "data.trajectory_length=3",
    "train.steps=20", "train.global_batch=4", "train.log_every=5", "train.checkpoint_every=5",
    "train.warmup_steps=3", "train.precision=fp32",
    "loss.target_update_period=10", "loss.num_action_samples=4",
    "eval.episodes_per_task=1", "eval.videos_per_task=0", "eval.workers=1",
    "rlft.rounds=0",
]


def copy_project(dst: Path) -> None:
    """What a fresh clone has: the files git tracks or would track (no data, venv, runs)."""
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, check=True,
        capture_output=True, text=True).stdout.split()
    for rel in files:
        if (ROOT / rel).is_file():
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, dst / rel)
    git = ["git", "-c", "user.email=ci@pac", "-c", "user.name=pac"]
    subprocess.run([*git, "init", "-q"], cwd=dst, check=True)
    subprocess.run([*git, "add", "-A"], cwd=dst, check=True)
    subprocess.run([*git, "commit", "-qm", "clone"], cwd=dst, check=True)


def flow_env(repo: Path) -> dict[str, str]:
    env = dict(os.environ)  # a user's shell: nothing an earlier test left behind
    for leaked in ("MLFLOW_TRACKING_URI", "RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR",
                   "MASTER_PORT", "METAFLOW_PROFILE"):
        env.pop(leaked, None)
    env.update(USERNAME="pac", PYTHONPATH=str(repo), PYTHONUNBUFFERED="1",
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}")
    return env


def run_flow(repo: Path, *args: str, flow: str = "flows/pac_flow.py"
             ) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, flow, *args], cwd=repo,
                          env=flow_env(repo), capture_output=True, text=True, timeout=900)


def metaflow_client(repo: Path, code: str) -> dict:
    """Run `code` (which prints one JSON line last) with the Metaflow client in `repo`."""
    head = "import json\nfrom metaflow import Flow, namespace\nnamespace(None)\n"
    out = subprocess.run([sys.executable, "-c", head + code], cwd=repo, env=flow_env(repo),
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def start_flow(repo: Path, log: Path, *args: str, **env: str) -> subprocess.Popen:
    """`python flows/pac_flow.py ARGS` in `repo`, in its own process group (the Metaflow runtime
    and its task processes), output to `log`; `env` adds variables."""
    with open(log, "w") as out:
        return subprocess.Popen([sys.executable, "flows/pac_flow.py", *args], cwd=repo,
                                env=flow_env(repo) | env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)


def kill_flow_when(proc: subprocess.Popen, log: Path, ready, seconds: float = 600,
                   delay: float = 0.0) -> None:
    """Poll `ready()` every 5 ms; once true (and `delay` s later) SIGKILL the flow's whole
    process group. Fails with the log's tail if the flow ends or `seconds` pass first."""
    import signal
    import time

    deadline = time.monotonic() + seconds
    try:
        while not ready():
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-4000:]
            time.sleep(0.005)
        time.sleep(delay)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def store_runs(repo: Path) -> list:
    """Every MLflow run in the store a flow run in `repo` logs to (mlruns/ of params/default)."""
    from pac.config import load_config
    from pac.tracking import client, experiment_id

    cfg = load_config(overrides=[f"tracking.uri=sqlite:///{repo}/mlruns/mlflow.db",
                                 f"tracking.artifact_dir={repo}/mlruns/artifacts"])
    mlc = client(cfg)
    return mlc.search_runs([experiment_id(mlc, cfg)])
