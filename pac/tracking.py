"""MLflow tracking for the PAC pipeline: the only module that imports MLflow.

Where runs go: ``MLFLOW_TRACKING_URI`` when set, else ``tracking.uri`` from params (a local
sqlite file); every experiment is created with an explicit, absolute artifact location
(``tracking.artifact_dir``) so artefacts never land relative to whatever folder a process
started in. A run records the whole flattened config (every alpha/beta/eta of every dataset
group), the metrics of each logging step and the artefacts (resolved config, checkpoints, the
final policy). Runs may nest under a parent run (the Metaflow flow's run).

The final policy is logged as a pyfunc model *from code*: this very file is the model's code and
the inference checkpoint (safetensors + config.yaml + tokenizer) its artefact, so loading the
model never unpickles anything.
"""

from __future__ import annotations

import contextlib
import math
import os
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from pac.config import REPO_ROOT, PACConfig

#: MLflow's limits per log_batch call and per param value.
_BATCH = 100
_MAX_PARAM_CHARS = 6000
#: Run-artefact folder of the pyfunc policy (load with ``runs:/<run_id>/policy_model``).
POLICY_MODEL_PATH = "policy_model"


def tracking_uri(cfg: PACConfig) -> str:
    """``MLFLOW_TRACKING_URI`` if set, else ``tracking.uri``; a sqlite file's folder is created."""
    uri = os.environ.get("MLFLOW_TRACKING_URI") or cfg.tracking.uri
    if uri.startswith("sqlite:///"):
        db = Path(uri[len("sqlite:///"):])
        db.parent.mkdir(parents=True, exist_ok=True)
    return uri


def artifact_location(cfg: PACConfig) -> str:
    """Absolute ``file://`` URI of the artefact root for new experiments."""
    root = Path(cfg.tracking.artifact_dir)
    root = (root if root.is_absolute() else Path.cwd() / root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    return root.as_uri()


def client(cfg: PACConfig) -> MlflowClient:
    return MlflowClient(tracking_uri=tracking_uri(cfg))


def experiment_id(mlc: MlflowClient, cfg: PACConfig) -> str:
    """The id of ``tracking.experiment``, created with an explicit artefact location if new."""
    exp = mlc.get_experiment_by_name(cfg.tracking.experiment)
    if exp is not None:
        return exp.experiment_id
    return mlc.create_experiment(cfg.tracking.experiment, artifact_location=artifact_location(cfg))


def git_commit() -> str:
    """The commit of the project checkout ("unknown" outside a git work tree)."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 else "unknown"


def _param_value(value: Any) -> str:
    text = str(value)
    return text if len(text) <= _MAX_PARAM_CHARS else text[: _MAX_PARAM_CHARS - 3] + "..."


class Tracker:
    """One MLflow run. With ``enabled=False`` (ranks other than 0) every call does nothing."""

    def __init__(
        self,
        cfg: PACConfig,
        run_name: str,
        *,
        parent_run_id: str | None = None,
        run_id: str | None = None,
        tags: dict[str, str] | None = None,
        enabled: bool = True,
    ) -> None:
        self.enabled = enabled
        self.run_id: str | None = None
        if not enabled:
            return
        self.client = client(cfg)
        if run_id is not None:  # resume: reopen the same run
            self.client.update_run(run_id, status="RUNNING")
            self.run_id = run_id
            return
        all_tags = dict(tags or {})
        if parent_run_id:
            self.client.get_run(parent_run_id)  # fails clearly if the parent does not exist
            all_tags["mlflow.parentRunId"] = parent_run_id
        run = self.client.create_run(experiment_id(self.client, cfg), run_name=run_name,
                                     tags=all_tags)
        self.run_id = run.info.run_id

    def log_params(self, params: dict[str, Any]) -> None:
        """Log params; on a resumed run, keys already present are kept as they were."""
        if not self.enabled:
            return
        existing = self.client.get_run(self.run_id).data.params
        items = [Param(k, _param_value(v)) for k, v in params.items() if k not in existing]
        for i in range(0, len(items), _BATCH):
            self.client.log_batch(self.run_id, params=items[i : i + _BATCH])

    def set_tags(self, tags: dict[str, Any]) -> None:
        if self.enabled:
            items = [RunTag(k, str(v)) for k, v in tags.items()]
            self.client.log_batch(self.run_id, tags=items)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        """Log finite metrics for training step `step` (NaN/inf are skipped, not stored)."""
        if not self.enabled:
            return
        now = int(time.time() * 1000)
        items = [
            Metric(k, float(v), now, step) for k, v in metrics.items() if math.isfinite(float(v))
        ]
        for i in range(0, len(items), _BATCH):
            self.client.log_batch(self.run_id, metrics=items[i : i + _BATCH])

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        if self.enabled:
            self.client.log_artifact(self.run_id, str(path), artifact_path)

    def log_artifacts(self, folder: str | Path, artifact_path: str | None = None) -> None:
        if self.enabled:
            self.client.log_artifacts(self.run_id, str(folder), artifact_path)

    def log_policy(self, checkpoint_dir: str | Path) -> str | None:
        """Log an inference checkpoint as ``policy/`` files and as a pyfunc model from code.

        Returns the model URI (``runs:/<run_id>/policy_model``).
        """
        if not self.enabled:
            return None
        checkpoint_dir = Path(checkpoint_dir)
        self.log_artifacts(checkpoint_dir, "policy")
        with tempfile.TemporaryDirectory() as tmp:
            target = Path(tmp) / POLICY_MODEL_PATH
            mlflow.pyfunc.save_model(
                path=str(target),
                python_model=str(Path(__file__).resolve()),
                artifacts={"checkpoint": str(checkpoint_dir)},
                pip_requirements=["torch==2.13.0", "safetensors", "pyyaml", "sentencepiece"],
            )
            self.log_artifacts(target, POLICY_MODEL_PATH)
        return f"runs:/{self.run_id}/{POLICY_MODEL_PATH}"

    def finish(self, status: str = "FINISHED") -> None:
        if self.enabled:
            self.client.set_terminated(self.run_id, status=status)


def get_run(cfg: PACConfig, run_id: str) -> dict[str, Any]:
    """A run's status, params, latest metrics and tags as plain dicts."""
    run = client(cfg).get_run(run_id)
    return {
        "status": run.info.status,
        "experiment_id": run.info.experiment_id,
        "artifact_uri": run.info.artifact_uri,
        "params": dict(run.data.params),
        "metrics": dict(run.data.metrics),
        "tags": dict(run.data.tags),
    }


def metric_history(cfg: PACConfig, run_id: str, key: str) -> list[tuple[int, float]]:
    """(step, value) pairs of one metric, in step order."""
    hist = client(cfg).get_metric_history(run_id, key)
    return sorted((m.step, m.value) for m in hist)


def list_artifacts(cfg: PACConfig, run_id: str, path: str | None = None) -> list[str]:
    return [a.path for a in client(cfg).list_artifacts(run_id, path)]


@contextlib.contextmanager
def _store(cfg: PACConfig) -> Iterator[None]:
    """Point MLflow's fluent API at this config's store for one call, then restore it.

    `mlflow.set_tracking_uri` also exports MLFLOW_TRACKING_URI to the process environment, which
    would silently redirect every later run of the process (and its children) to this store.
    """
    before = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(tracking_uri(cfg))
    try:
        yield
    finally:
        mlflow.set_tracking_uri(before)
        if before is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)


def download_artifacts(cfg: PACConfig, uri: str, dst: str | Path) -> Path:
    """Copy run or model artefacts (``runs:/<id>/policy``, ``models:/<name>@<alias>``) to `dst`."""
    Path(dst).mkdir(parents=True, exist_ok=True)
    with _store(cfg):
        return Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(dst)))


def load_policy_model(cfg: PACConfig, model_uri: str):
    """Load a logged pyfunc policy (``runs:/<run_id>/policy_model``) against this config's store."""
    with _store(cfg):
        return mlflow.pyfunc.load_model(model_uri)


# --- model registry (RLFT rounds: the `champion` alias) -------------------------------------------


def register_policy(cfg: PACConfig, model_uri: str, tags: dict[str, Any] | None = None) -> str:
    """Register `model_uri` (``runs:/<id>/policy_model``) as a new version of
    ``tracking.registered_model``; returns the version number."""
    with _store(cfg):
        version = mlflow.register_model(
            model_uri, cfg.tracking.registered_model,
            tags={k: str(v) for k, v in (tags or {}).items()},
        )
    return str(version.version)


def model_alias(cfg: PACConfig, alias: str) -> dict[str, Any] | None:
    """{"version", "run_id", "source", "tags"} of the version holding `alias`, or None."""
    from mlflow.exceptions import MlflowException

    try:
        mv = client(cfg).get_model_version_by_alias(cfg.tracking.registered_model, alias)
    except MlflowException:  # no such model or alias yet
        return None
    return {"version": str(mv.version), "run_id": mv.run_id, "source": mv.source,
            "tags": dict(mv.tags)}


def set_model_alias(cfg: PACConfig, alias: str, version: str) -> None:
    client(cfg).set_registered_model_alias(cfg.tracking.registered_model, alias, str(version))


class PACPolicyModel(mlflow.pyfunc.PythonModel):
    """pyfunc face of an inference checkpoint, served by :class:`pac.rollout.PolicyServer`.

    Input: a DataFrame with columns ``instruction`` (task name, e.g. ``cartpole.balance``) and
    ``proprio`` (the task's flattened observation). Output: one action list per row (greedy
    decoding: the most likely bin of every action dimension).
    """

    def load_context(self, context) -> None:
        from pac.rollout import PolicyServer

        self.server = PolicyServer.load(context.artifacts["checkpoint"], decode="argmax")

    def predict(self, context, model_input, params=None) -> list[list[float]]:
        rows = zip(model_input["instruction"], model_input["proprio"])
        return [self.server.act(np.asarray(p), task).tolist() for task, p in rows]


if __name__.startswith("code_model_"):  # executed by MLflow as the logged model's code file
    mlflow.models.set_model(PACPolicyModel())
