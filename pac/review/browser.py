"""Review a flow run in the MLflow UI: a loopback `mlflow server` over the store and headless
Chromium driven through the DevTools protocol (no driver binary, no extra package: `websockets`
comes with MLflow).

    with MlflowServer(cfg) as server, Browser() as browser:
        page = browser.open(server.run_url(exp_id, run_id), expect=["success_rate"])
        page.screenshot("run.png")

The server listens on 127.0.0.1 only, with one worker, and is stopped by its own process
group id. Chromium runs with a fresh profile and every background service off (no network but
the loopback server). Pages are single-page apps: :meth:`Browser.open` waits until the rendered
text contains what is expected, so a check fails with the page text, not a blank screenshot.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pac.config import PACConfig

CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
)


ML_VIEW = "workflowType=machine_learning"
#: The UI's own settings (localStorage) a reviewer sets once: the model-training view, and the
#: UI chat panel closed (it opens by itself on the first visit to a local server).
UI_SETTINGS = {"mlflow.workflowType_v1": "machine_learning",
               "mlflow.assistant.fab.autoOpenedOnFirstLoad_v1": True,
               "mlflow.assistant.panelOpen_v1": False}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MlflowServer:
    """`mlflow server` on 127.0.0.1 over a config's store, started and stopped by its PID."""

    def __init__(self, cfg: PACConfig, cwd: str | Path | None = None, log: Path | None = None,
                 startup_s: float = 120.0) -> None:
        from pac.tracking import artifact_location, tracking_uri

        self.uri = tracking_uri(cfg)
        self.artifacts = artifact_location(cfg)
        self.cwd = Path(cwd or Path.cwd())
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = log
        self.startup_s = startup_s
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> MlflowServer:
        mlflow = Path(sys.executable).parent / "mlflow"
        out = open(self.log, "w") if self.log else subprocess.DEVNULL  # noqa: SIM115
        env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
        self.process = subprocess.Popen(
            [str(mlflow), "server", "--backend-store-uri", self.uri,
             "--default-artifact-root", self.artifacts, "--host", "127.0.0.1",
             "--port", str(self.port), "-w", "1"],
            cwd=self.cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True)
        deadline = time.monotonic() + self.startup_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"mlflow server exited with {self.process.returncode}")
            try:
                urllib.request.urlopen(f"{self.base}/health", timeout=2)
                return self
            except OSError:
                time.sleep(0.5)
        self.__exit__()
        raise TimeoutError(f"mlflow server did not answer /health in {self.startup_s:.0f} s")

    def __exit__(self, *exc: object) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)  # its own group: gunicorn workers too
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=30)

    def api(self, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """One REST call (POST with `body`, else GET) of the MLflow API 2.0."""
        url = f"{self.base}/api/2.0/mlflow{path}"
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(url, data, {"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.load(r)

    # MLflow 3 opens every page in its LLM-tracing view unless told otherwise; the query parameter
    # (what the sidebar's "Model training" switch sets) selects the model-training view.

    def run_url(self, exp_id: str, run_id: str) -> str:
        return f"{self.base}/#/experiments/{exp_id}/runs/{run_id}?{ML_VIEW}"

    def artifact_url(self, exp_id: str, run_id: str, path: str) -> str:
        return f"{self.base}/#/experiments/{exp_id}/runs/{run_id}/artifacts/{path}?{ML_VIEW}"

    def model_url(self, name: str, version: str | None = None) -> str:
        return (f"{self.base}/#/models/{name}" + (f"/versions/{version}" if version else "")
                + f"?{ML_VIEW}")


@dataclass
class Page:
    """One browser tab, driven over its DevTools websocket."""

    ws: Any
    _id: int = 0

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self._id += 1
        self.ws.send(json.dumps({"id": self._id, "method": method, "params": params}))
        while True:  # events arrive in between; skip them
            msg = json.loads(self.ws.recv(timeout=60))
            if msg.get("id") == self._id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})

    def evaluate(self, expression: str) -> Any:
        got = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return got.get("result", {}).get("value")

    def text(self) -> str:
        """The rendered text, every run of whitespace (non-breaking spaces too) as one space."""
        raw = self.evaluate("document.body ? document.body.innerText : ''") or ""
        return " ".join(raw.split())

    def wait_for(self, expect: list[str], timeout_s: float = 60.0, image: bool = False) -> str:
        """Wait until the rendered text holds every string of `expect` (and, with `image`, an
        image has loaded and is drawn); returns the text. Raises with the text."""
        deadline = time.monotonic() + timeout_s
        text = ""
        while time.monotonic() < deadline:
            text = self.text()
            ok = all(e in text for e in expect)
            if ok and image:  # the artefact view shows PNGs as blob: images
                ok = bool(self.evaluate(
                    "Array.from(document.images).some(i => i.complete && i.naturalWidth > 100)"))
            if ok:
                return text
            time.sleep(0.5)
        missing = [e for e in expect if e not in text]
        raise AssertionError(f"page lacks {missing or 'an image'}; it shows:\n"
                             f"{text[:3000]}")

    def screenshot(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        shot = self.call("Page.captureScreenshot", format="png", captureBeyondViewport=False)
        path.write_bytes(base64.b64decode(shot["data"]))
        return path


class Browser:
    """Headless Chromium (Debian's `chromium`) with a fresh profile, one tab."""

    def __init__(self, binary: str | None = None, size: tuple[int, int] = (1500, 1100)) -> None:
        self.binary = binary or shutil.which("chromium") or shutil.which("chromium-browser")
        if not self.binary:
            raise FileNotFoundError("chromium not found: apt-get install -y chromium")
        self.size = size
        self.process: subprocess.Popen | None = None
        self.profile: str | None = None
        self.page: Page | None = None
        self._origins: set[str] = set()
        self._stack: contextlib.ExitStack | None = None

    def __enter__(self) -> Browser:
        from websockets.sync.client import connect

        self.profile = tempfile.mkdtemp(prefix="pac-chromium-")
        self.process = subprocess.Popen(
            [self.binary, *CHROMIUM_FLAGS, f"--user-data-dir={self.profile}",
             "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0",
             f"--window-size={self.size[0]},{self.size[1]}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        active = Path(self.profile) / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not (active.is_file() and len(active.read_text().splitlines()) >= 2):
            if time.monotonic() > deadline or self.process.poll() is not None:
                self.__exit__()
                raise RuntimeError("chromium did not open its DevTools port")
            time.sleep(0.2)
        port = int(active.read_text().splitlines()[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as r:
            targets = [t for t in json.load(r) if t.get("type") == "page"]
        self._stack = contextlib.ExitStack()
        self.page = Page(self._stack.enter_context(
            connect(targets[0]["webSocketDebuggerUrl"], max_size=None, open_timeout=30)))
        self.page.call("Page.enable")
        return self

    def open(self, url: str, expect: list[str], timeout_s: float = 90.0,
             image: bool = False) -> Page:
        """Load `url` and wait for its rendered text to hold `expect` (see Page.wait_for).

        The first page of a server gets :data:`UI_SETTINGS` first (set on its origin)."""
        assert self.page is not None
        origin = url.split("/#", 1)[0]
        if origin not in self._origins:
            self.page.call("Page.navigate", url=f"{origin}/health")
            time.sleep(0.5)
            for key, value in UI_SETTINGS.items():
                self.page.evaluate(f"localStorage.setItem({json.dumps(key)},"
                                   f" {json.dumps(json.dumps(value))})")
            self._origins.add(origin)
        self.page.call("Page.navigate", url=url)
        self.page.wait_for(expect, timeout_s, image)
        return self.page

    def __exit__(self, *exc: object) -> None:
        if self._stack is not None:
            self._stack.close()  # the websocket
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=20)
        if self.profile:
            shutil.rmtree(self.profile, ignore_errors=True)


def latest_flow_run(server: MlflowServer, experiment: str) -> tuple[str, dict[str, Any]]:
    """(experiment id, newest run tagged pac_role=flow) through the server's REST API."""
    exps = server.api("/experiments/search", {"max_results": 1000})["experiments"]
    exp_id = next(e["experiment_id"] for e in exps if e["name"] == experiment)
    runs = server.api("/runs/search", {
        "experiment_ids": [exp_id], "filter": "tags.pac_role = 'flow'",
        "order_by": ["attributes.start_time DESC"], "max_results": 1})["runs"]
    if not runs:
        raise LookupError(f"no flow run in experiment {experiment!r}")
    return exp_id, runs[0]


def review_screenshots(cfg: PACConfig, out_dir: str | Path, cwd: str | Path | None = None
                       ) -> dict[str, Any]:
    """Open the newest flow run's page, its figure and the registered model in Chromium, check
    that the headline (success over all evaluated episodes), the champion version, a figure and
    (with ``eval.bc_baseline``) PAC beside BC are shown, and save a screenshot of each page in
    `out_dir`. Returns what was seen and the screenshot paths."""
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    name = cfg.tracking.registered_model
    with MlflowServer(cfg, cwd=cwd, log=out / "mlflow_server.log") as server, \
            Browser() as browser:
        exp_id, run = latest_flow_run(server, cfg.tracking.experiment)
        run_id = run["info"]["run_id"]
        tags = {t["key"]: t["value"] for t in run["data"].get("tags", [])}
        version = tags["pac.champion_version"]
        metrics = {m["key"]: m["value"] for m in run["data"].get("metrics", [])}
        headline = f"{name} v{version} is the champion"
        arms = tags.get("pac.arms_decision")  # eval.bc_baseline: PAC beside BC
        page = browser.open(server.run_url(exp_id, run_id),
                            expect=[headline, tags["pac.success"], "success_rate", "pct_expert",
                                    "champion_version",
                                    *(["PAC beside BC", arms, "bc_success_rate"] if arms else [])])
        shots = {"run": page.screenshot(out / "run_page.png")}
        browser.open(server.artifact_url(exp_id, run_id, "figures/success.png"),
                     expect=["figures/success.png"], image=True)
        shots["figure"] = page.screenshot(out / "run_figure.png")
        browser.open(server.model_url(name), expect=[name, f"Version {version}", "@ champion"])
        shots["model"] = page.screenshot(out / "model_page.png")
        browser.open(server.model_url(name, version),
                     expect=[f"Model card: {name} v{version}", "success % [Wilson 95%]"])
        shots["version"] = page.screenshot(out / "model_version_page.png")
    return {"experiment_id": exp_id, "run_id": run_id, "champion_version": version,
            "success_rate": metrics.get("success_rate"), "headline": tags["pac.success"],
            "episodes": metrics.get("episodes"), "arms": arms,
            "bc_success_rate": metrics.get("bc_success_rate"),
            "screenshots": {k: str(v) for k, v in shots.items()}}
