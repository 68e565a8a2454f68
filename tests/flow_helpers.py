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
