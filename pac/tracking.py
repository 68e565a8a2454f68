"""MLflow tracking for the PAC pipeline: the only module that imports MLflow.

Where runs go: ``MLFLOW_TRACKING_URI`` when set, else ``tracking.uri`` from params (a local
sqlite file); every experiment is created with an explicit, absolute artifact location
(``tracking.artifact_dir``) so artefacts never land relative to whatever folder a process
started in. A run records the whole flattened config (every alpha/beta/eta of every dataset
group), the metrics of each logging step and the artefacts (resolved config, checkpoints, the
final policy). Runs may nest under a parent run (the Metaflow flow's run).

Every run carries the git commit and a dirty flag (``mlflow.source.git.commit``,
``pac.git_dirty``); params never hold absolute paths inside the project (they are written
relative to it) and per-group alpha/beta are logged as the values the loss uses. Experiments are
tagged ``mlflow.experimentKind=custom_model_development`` so the UI opens in its model-training
view.

The policy is logged once per checkpoint as an MLflow *logged model* (pyfunc, from code): this
very file is the model's code, the ``pac`` package travels as ``code_paths`` (the model loads in
an environment without this repository), the inference checkpoint (safetensors + config.yaml +
tokenizer) is its one artefact, and a signature and input example describe its input. Loading it
never unpickles anything.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, Param, RunTag
from mlflow.tracking import MlflowClient
from pydantic import BaseModel

from pac.config import REPO_ROOT, PACConfig

#: MLflow's limits per log_batch call and per param value.
_BATCH = 100
_MAX_PARAM_CHARS = 6000
#: Name of the pyfunc policy logged by a run (load with ``runs:/<run_id>/policy_model``).
POLICY_MODEL_PATH = "policy_model"
#: The UI's model-training view (MLflow 3 opens untagged experiments in its LLM-tracing view).
EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")
_PROGRESS_BAR = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
#: Markdown shown as a run's description in the UI.
NOTE_TAG = "mlflow.note.content"
#: What the logged model needs besides the `pac` code it carries (pins of requirements.lock).
MODEL_REQUIREMENTS = ["torch==2.13.0", "numpy==2.4.6", "safetensors", "pyyaml", "sentencepiece",
                      "pydantic"]


def tracking_uri(cfg: PACConfig) -> str:
    """``MLFLOW_TRACKING_URI`` if set, else ``tracking.uri``; a sqlite file's folder is created,
    and a store that was moved or copied is pointed at its own artefacts
    (:func:`relocate_store`)."""
    uri = os.environ.get("MLFLOW_TRACKING_URI") or cfg.tracking.uri
    if uri.startswith("sqlite:///"):
        db = Path(uri[len("sqlite:///"):])
        db.parent.mkdir(parents=True, exist_ok=True)
        if db.is_file():
            relocate_store(db.resolve())
    return uri


#: MLflow's sqlite columns that hold absolute artefact URIs.
_URI_COLUMNS = (("experiments", "artifact_location"), ("runs", "artifact_uri"),
                ("logged_models", "artifact_location"), ("model_versions", "storage_location"))
#: Experiment tag: the artefact root relative to the sqlite file's folder (a movable store).
ROOT_TAG = "pac.artifact_root"


@functools.lru_cache(maxsize=8)
def relocate_store(db: Path) -> int:
    """Point the artefact URIs of a moved or copied sqlite store at its own artefact folder;
    returns the number of rows changed (0 for a store where it was made).

    MLflow stores local artefact locations as absolute paths (it resolves relative ones when
    an experiment is created), so a copied ``mlruns/`` would read the original's files, and
    fail once they are gone. Every experiment records its root relative to the database's
    folder (tag ``pac.artifact_root``; older stores: a folder of the same name next to the
    database); when that folder exists and the recorded absolute location differs, the prefix
    is rewritten in every column holding an artefact URI, in one transaction."""
    import sqlite3
    from urllib.parse import unquote, urlparse

    changed = 0
    with contextlib.closing(sqlite3.connect(db, timeout=30)) as con, con:
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if not {"experiments", "experiment_tags"} <= tables:
            return 0
        rel = dict(con.execute("SELECT experiment_id, value FROM experiment_tags WHERE key = ?",
                               (ROOT_TAG,)).fetchall())
        for exp_id, old in con.execute(
                "SELECT experiment_id, artifact_location FROM experiments").fetchall():
            if not old.startswith("file://"):
                continue
            here = db.parent / (rel.get(exp_id) or Path(unquote(urlparse(old).path)).name)
            new = here.resolve().as_uri()
            if new == old or not here.is_dir() or exp_id not in rel and (
                    Path(unquote(urlparse(old).path)).is_dir()):
                continue
            for table, column in _URI_COLUMNS:
                if table in tables:
                    changed += con.execute(
                        f"UPDATE {table} SET {column} = ? || substr({column}, ?)"  # noqa: S608
                        f" WHERE {column} = ? OR substr({column}, 1, ?) = ?",
                        (new, len(old) + 1, old, len(old) + 1, old + "/")).rowcount
    return changed


def artifact_location(cfg: PACConfig) -> str:
    """Absolute ``file://`` URI of the artefact root for new experiments."""
    root = Path(cfg.tracking.artifact_dir)
    root = (root if root.is_absolute() else Path.cwd() / root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    return root.as_uri()


def client(cfg: PACConfig) -> MlflowClient:
    return MlflowClient(tracking_uri=tracking_uri(cfg))


def experiment_id(mlc: MlflowClient, cfg: PACConfig) -> str:
    """The id of ``tracking.experiment``, created with an explicit artefact location if new and
    tagged for the UI's model-training view."""
    exp = mlc.get_experiment_by_name(cfg.tracking.experiment)
    if exp is None:
        tags = dict([EXPERIMENT_KIND])
        from urllib.parse import unquote, urlparse

        root = Path(unquote(urlparse(artifact_location(cfg)).path))
        uri = tracking_uri(cfg)
        if uri.startswith("sqlite:///"):  # the root's place in the store: it moves with it
            with contextlib.suppress(ValueError):
                db_dir = Path(uri[len("sqlite:///"):]).resolve().parent
                tags[ROOT_TAG] = root.relative_to(db_dir).as_posix()
        return mlc.create_experiment(cfg.tracking.experiment,
                                     artifact_location=artifact_location(cfg), tags=tags)
    if exp.tags.get(EXPERIMENT_KIND[0]) is None:  # an experiment made before the tag existed
        mlc.set_experiment_tag(exp.experiment_id, *EXPERIMENT_KIND)
    return exp.experiment_id


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True,
                             timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout if out.returncode == 0 else None


@functools.lru_cache(maxsize=1)
def git_state() -> tuple[str, bool]:
    """(commit, dirty) of the project checkout: ("unknown", False) outside a git work tree.

    Dirty means tracked files differ from the commit (untracked files do not count: outputs
    such as runs/ and mlruns/ are ignored, and a new untracked file cannot have changed what
    ran). Read once per process: every run of one process shares the same code.
    """
    commit = _git("rev-parse", "HEAD")
    if commit is None:
        return "unknown", False
    status = _git("status", "--porcelain", "--untracked-files=no")
    return commit.strip(), bool(status and status.strip())


def git_commit() -> str:
    """The commit of the project checkout ("unknown" outside a git work tree)."""
    return git_state()[0]


def lineage_tags() -> dict[str, str]:
    """The tags every run carries: the commit (MLflow's own source tag too) and a dirty flag."""
    commit, dirty = git_state()
    return {"mlflow.source.git.commit": commit, "pac.git_commit": commit,
            "pac.git_dirty": str(dirty).lower()}


def portable(value: Any) -> Any:
    """`value` with absolute paths inside the project (or the working folder) made relative.

    Params and artefact names must read the same on every machine; a path outside both (e.g. a
    temporary folder) is kept as it is.
    """
    if not isinstance(value, str | Path) or not os.path.isabs(str(value)):
        return value
    path = Path(value)
    for base in (Path.cwd().resolve(), REPO_ROOT.resolve()):
        with contextlib.suppress(ValueError):
            rel = path.resolve().relative_to(base)
            return str(rel) if str(rel) != "." else "."
    return value


_GROUP_KEY = re.compile(r"^data\.groups\.(?P<group>[^.]+)\.(?P<key>alpha|beta)$")


def resolved_params(cfg: PACConfig, params: dict[str, Any]) -> dict[str, Any]:
    """`params` with each dataset group's unset alpha/beta replaced by the value the loss uses
    (:func:`pac.config.group_alpha_beta`) and project paths made relative (:func:`portable`)."""
    from pac.config import group_alpha_beta

    groups = {g.name: g for g in cfg.data.groups}
    out = {}
    for key, value in params.items():
        match = _GROUP_KEY.match(key)
        if value is None and match and match["group"] in groups:
            alpha, beta = group_alpha_beta(cfg, groups[match["group"]])
            value = alpha if match["key"] == "alpha" else beta
        out[key] = portable(value)
    return out


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
        self.cfg = cfg
        if not enabled:
            return
        self.client = client(cfg)
        if run_id is not None:  # resume: reopen the same run
            self.client.update_run(run_id, status="RUNNING")
            self.run_id = run_id
            return
        all_tags = lineage_tags() | dict(tags or {})
        if parent_run_id:
            self.client.get_run(parent_run_id)  # fails clearly if the parent does not exist
            all_tags["mlflow.parentRunId"] = parent_run_id
        run = self.client.create_run(experiment_id(self.client, cfg), run_name=run_name,
                                     tags=all_tags)
        self.run_id = run.info.run_id

    @classmethod
    def existing(cls, cfg: PACConfig, run_id: str) -> Tracker:
        """A handle on a run that leaves its status as it is (e.g. a finished training run
        that gets its dataset inputs afterwards)."""
        tracker = cls(cfg, "", enabled=False)
        tracker.enabled, tracker.client, tracker.run_id = True, client(cfg), run_id
        return tracker

    def log_params(self, params: dict[str, Any]) -> None:
        """Log params (see :func:`resolved_params`); on a resumed run, keys already present are
        kept as they were."""
        if not self.enabled:
            return
        existing = self.client.get_run(self.run_id).data.params
        params = resolved_params(self.cfg, params)
        items = [Param(k, _param_value(v)) for k, v in params.items() if k not in existing]
        for i in range(0, len(items), _BATCH):
            self.client.log_batch(self.run_id, params=items[i : i + _BATCH])

    def set_tags(self, tags: dict[str, Any]) -> None:
        if self.enabled:
            items = [RunTag(k, str(v)) for k, v in tags.items()]
            self.client.log_batch(self.run_id, tags=items)

    def log_metrics(self, metrics: dict[str, float], step: int, only_new: bool = False) -> None:
        """Log finite metrics for training step `step` (NaN/inf are skipped, not stored);
        `only_new`: skip the keys the run already has (a continued run logging the same
        values again would add a second point at the same step)."""
        if not self.enabled:
            return
        now = int(time.time() * 1000)
        known = self.client.get_run(self.run_id).data.metrics if only_new else {}
        items = [
            Metric(k, float(v), now, step) for k, v in metrics.items()
            if math.isfinite(float(v)) and k not in known
        ]
        for i in range(0, len(items), _BATCH):
            self.client.log_batch(self.run_id, metrics=items[i : i + _BATCH])

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        if self.enabled:
            self.client.log_artifact(self.run_id, str(path), artifact_path)

    def log_artifacts(self, folder: str | Path, artifact_path: str | None = None) -> None:
        if self.enabled:
            self.client.log_artifacts(self.run_id, str(folder), artifact_path)

    def set_description(self, markdown: str) -> None:
        """The run's description in the UI (MLflow's ``mlflow.note.content`` tag)."""
        self.set_tags({NOTE_TAG: markdown})

    def log_figure(self, figure: Any, artifact_file: str) -> None:
        """A matplotlib figure as a PNG artefact (shown inline by the UI's artefact view)."""
        if self.enabled:
            self.client.log_figure(self.run_id, figure, artifact_file)

    def log_table(self, rows: list[dict[str, Any]], artifact_file: str) -> None:
        """Rows as an MLflow table artefact (``.json``; the UI renders it as a table).

        Logging the same file again replaces it (MLflow's own ``log_table`` appends the rows
        to an existing file, so two steps logging one table would show every row twice)."""
        if not (self.enabled and rows):
            return
        import pandas as pd

        columns = list(dict.fromkeys(k for r in rows for k in r))
        data = {c: [_table_value(r.get(c)) for r in rows] for c in columns}
        folder = os.path.dirname(artifact_file) or None
        if artifact_file not in {a.path for a in self.client.list_artifacts(self.run_id, folder)}:
            self.client.log_table(self.run_id, data, artifact_file)
            return
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:  # same layout as MLflow's table files
            path = Path(tmp) / os.path.basename(artifact_file)
            pd.DataFrame(data).to_json(path, orient="split", index=False, date_format="iso")
            self.client.log_artifact(self.run_id, str(path), folder)

    def log_datasets(self, version: dict[str, Any], context: str = "training") -> None:
        """One MLflow dataset input per DVC-tracked data output (its DVC hash as the digest),
        plus the store fingerprint (covers groups DVC does not track, e.g. RLFT rollouts), so the
        UI's Datasets panel shows exactly which data a run used."""
        if not self.enabled:
            return
        inputs = []
        for key, digest in version.items():
            if key == "dvc_lock" or not digest:
                continue
            name = "episodes (all groups)" if key == "episodes_fingerprint" else str(key)
            source_type = "pac-store" if key == "episodes_fingerprint" else "dvc"
            source = str(portable(version.get("dvc_lock") or "")) if source_type == "dvc" else ""
            dataset = Dataset(name=name, digest=str(digest)[:36], source_type=source_type,
                              source=f"{key}@{source}" if source else str(key))
            inputs.append(DatasetInput(dataset, [InputTag("mlflow.data.context", context)]))
        if inputs:
            self.client.log_inputs(self.run_id, datasets=inputs)

    def log_policy(self, checkpoint_dir: str | Path) -> str | None:
        """Log an inference checkpoint as a self-contained pyfunc logged model of this run.

        Returns its URI (``models:/m-<id>``; ``runs:/<run_id>/policy_model`` resolves to it).
        """
        if not self.enabled:
            return None
        from mlflow.models import Model

        checkpoint_dir = Path(checkpoint_dir)
        example = policy_input_example(checkpoint_dir)
        run = self.client.get_run(self.run_id)
        # Created here so the model lands in this run's experiment (Model.log alone would
        # use the process's default experiment and its ./mlruns folder).
        model = self.client.create_logged_model(
            run.info.experiment_id, name=POLICY_MODEL_PATH, source_run_id=self.run_id,
            tags={k: v for k, v in run.data.tags.items() if k.startswith("pac.")},
        )
        with _store(self.cfg):
            info = Model.log(
                artifact_path=None, name=POLICY_MODEL_PATH, flavor=mlflow.pyfunc,
                run_id=self.run_id, model_id=model.model_id,
                python_model=str(Path(__file__).resolve()),
                artifacts={"checkpoint": str(checkpoint_dir)},
                code_paths=[str(Path(__file__).resolve().parent)],
                input_example=example,
                pip_requirements=MODEL_REQUIREMENTS,
            )
        return info.model_uri

    def finish(self, status: str = "FINISHED") -> None:
        if self.enabled:
            self.client.set_terminated(self.run_id, status=status)


def end_stale_runs(cfg: PACConfig, parent_run_id: str, run_name: str, keep: str | None
                   ) -> list[str]:
    """End as KILLED every child run of `parent_run_id` named `run_name` that is still RUNNING,
    except `keep`; each gets the tag ``pac.continued_in=<keep>``. Returns their ids.

    A killed process never closes its MLflow run. A resumed step continues its own run by id
    (the trainer's ``mlflow_run.json``); a run the killed attempt opened but had not yet
    recorded (killed in between) would stay RUNNING for ever: this closes it, linked to the run
    that carried on."""
    mlc = client(cfg)
    parent = mlc.get_run(parent_run_id)
    runs = mlc.search_runs(
        [parent.info.experiment_id],
        filter_string=(f"tags.mlflow.parentRunId = '{parent_run_id}'"
                       f" and attributes.run_name = '{run_name}'"
                       " and attributes.status = 'RUNNING'"))
    ended = []
    for run in runs:
        if run.info.run_id == keep:
            continue
        if keep:
            mlc.set_tag(run.info.run_id, "pac.continued_in", keep)
        mlc.set_terminated(run.info.run_id, status="KILLED")
        ended.append(run.info.run_id)
    return ended


#: what an offline evaluation folder holds (pac.evaluation.offline), logged under eval/offline
OFFLINE_FILES = ("offline.md", "offline.csv", "calibration.csv", "pairs.csv", "calibration.png",
                 "metrics.json")


def log_offline_evaluation(cfg: PACConfig, out_dir: str | Path, metrics: dict[str, float],
                           parent_run_id: str | None, params: dict[str, Any]) -> str | None:
    """One MLflow run ``eval-offline`` (nested under `parent_run_id` when given) with the
    offline evaluation's params, per-task metrics (``offline/<task>/...``) and its files under
    ``eval/offline``; the calibration plot and table also go on the parent run under
    ``evaluation/offline``, the flow's dashboard. A RUNNING ``eval-offline`` child that a
    killed attempt left is ended (:func:`end_stale_runs`). Returns the run id."""
    out = Path(out_dir)
    tracker = Tracker(cfg, "eval-offline", parent_run_id=parent_run_id,
                      tags={"pac.stage": "evaluate", "pac.evaluation": "offline"})
    if parent_run_id:
        end_stale_runs(cfg, parent_run_id, "eval-offline", tracker.run_id)
    tracker.log_params(params)
    tracker.log_metrics(metrics, step=0)
    for name in OFFLINE_FILES:
        if (out / name).is_file():
            tracker.log_artifact(out / name, "eval/offline")
    tracker.set_description((out / "offline.md").read_text())
    tracker.finish()
    if parent_run_id:
        parent = Tracker.existing(cfg, parent_run_id)
        for name in ("offline.md", "calibration.png"):
            parent.log_artifact(out / name, "evaluation/offline")
    return tracker.run_id


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
    """A run's artefact paths under `path`; at the top level also the names of the models it
    logged (``policy_model``: they live in the model store, ``runs:/<id>/<name>`` finds them)."""
    mlc = client(cfg)
    files = [a.path for a in mlc.list_artifacts(run_id, path)]
    if path is None:
        run = mlc.get_run(run_id)
        outputs = run.outputs.model_outputs if run.outputs else []
        files += sorted({mlc.get_logged_model(o.model_id).name for o in outputs} - set(files))
    return files


@contextlib.contextmanager
def _store(cfg: PACConfig) -> Iterator[None]:
    """Point MLflow's fluent API at this config's store for one call, then restore it.

    `mlflow.set_tracking_uri` also exports MLFLOW_TRACKING_URI to the process environment, which
    would silently redirect every later run of the process (and its children) to this store.
    """
    before = os.environ.get("MLFLOW_TRACKING_URI")
    bar = os.environ.get(_PROGRESS_BAR)
    os.environ[_PROGRESS_BAR] = "false"  # one tqdm bar per download floods non-TTY logs
    mlflow.set_tracking_uri(tracking_uri(cfg))
    try:
        yield
    finally:
        mlflow.set_tracking_uri(before)
        if before is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        if bar is None:
            os.environ.pop(_PROGRESS_BAR, None)
        else:
            os.environ[_PROGRESS_BAR] = bar


def download_artifacts(cfg: PACConfig, uri: str, dst: str | Path) -> Path:
    """Copy run or model artefacts (``runs:/<id>/policy_model``, ``models:/<name>@<alias>``) to
    `dst`."""
    Path(dst).mkdir(parents=True, exist_ok=True)
    with _store(cfg):
        return Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(dst)))


def load_policy_model(cfg: PACConfig, model_uri: str):
    """Load a logged pyfunc policy (``runs:/<run_id>/policy_model``) against this config's store."""
    with _store(cfg):
        return mlflow.pyfunc.load_model(model_uri)


# --- model registry (RLFT rounds: the `champion` alias) -------------------------------------------


def _logged_model_id(mlc: MlflowClient, model_uri: str) -> str:
    """The logged model behind ``models:/m-<id>`` or ``runs:/<run_id>/<name>`` (the newest of
    that name in the run)."""
    if model_uri.startswith("models:/m-"):
        return model_uri[len("models:/"):].split("/")[0]
    if not model_uri.startswith("runs:/"):
        raise ValueError(f"model_uri {model_uri!r} is neither models:/m-<id> nor runs:/<id>/<name>")
    run_id, _, name = model_uri[len("runs:/"):].partition("/")
    run = mlc.get_run(run_id)
    outputs = sorted(run.outputs.model_outputs if run.outputs else [], key=lambda o: o.step)
    ids = [o.model_id for o in outputs if mlc.get_logged_model(o.model_id).name == name]
    if not ids:
        raise ValueError(f"run {run_id} logged no model named {name!r}")
    return ids[-1]


def register_policy(cfg: PACConfig, model_uri: str, tags: dict[str, Any] | None = None) -> str:
    """Register `model_uri` (``models:/m-<id>`` or ``runs:/<id>/policy_model``) as a new version
    of ``tracking.registered_model``, tagged with `tags` and the lineage tags; returns the
    version number.

    The version's run is the flow's parent run when the tags name one (``pac.flow_run``), so
    the parent run page lists it under "Registered models"; else the run that logged it."""
    from mlflow.exceptions import MlflowException

    all_tags = {k: str(v) for k, v in (lineage_tags() | (tags or {})).items()}
    all_tags.pop("mlflow.source.git.commit", None)  # a run tag; versions carry pac.git_commit
    mlc, name = client(cfg), cfg.tracking.registered_model
    model_id = _logged_model_id(mlc, model_uri)
    run_id = all_tags.get("pac.flow_run") or mlc.get_logged_model(model_id).source_run_id
    with contextlib.suppress(MlflowException):  # exists already
        mlc.create_registered_model(name)
    with _store(cfg):
        version = mlc.create_model_version(name, f"models:/{model_id}", run_id=run_id,
                                           tags=all_tags, model_id=model_id)
    return str(version.version)


def set_version_tags(cfg: PACConfig, version: str, tags: dict[str, Any]) -> None:
    """Set (or overwrite) tags of one registered version."""
    mlc = client(cfg)
    for key, value in tags.items():
        mlc.set_model_version_tag(cfg.tracking.registered_model, str(version), key, str(value))


def model_version(cfg: PACConfig, version: str) -> dict[str, Any]:
    """{"version", "run_id", "source", "tags", "aliases"} of one registered version."""
    mv = client(cfg).get_model_version(cfg.tracking.registered_model, str(version))
    return {"version": str(mv.version), "run_id": mv.run_id, "source": mv.source,
            "tags": dict(mv.tags), "aliases": list(mv.aliases)}


def set_model_description(cfg: PACConfig, version: str, markdown: str) -> None:
    """The version's description in the registry UI (e.g. its model card)."""
    client(cfg).update_model_version(cfg.tracking.registered_model, str(version),
                                     description=markdown)


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


def _table_value(value: Any) -> Any:
    """Table cells MLflow can store: finite floats, or None for NaN/inf."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class PolicyInput(BaseModel):
    """One observation for the policy: the task's instruction and its flattened proprioception."""

    instruction: str  # task name, e.g. "cartpole.balance"
    proprio: list[float]


def policy_input_example(checkpoint_dir: str | Path) -> list[dict[str, Any]]:
    """A valid input for the checkpoint: the first training task at a zero observation."""
    from pac.checkpoint import load_checkpoint_config
    from pac.tasks import TASKS

    ckpt = load_checkpoint_config(checkpoint_dir)
    task = next(t for g in ckpt.data.groups for t in g.tasks)
    return [{"instruction": task, "proprio": [0.0] * TASKS[task].num_proprio}]


class PACPolicyModel(mlflow.pyfunc.PythonModel):
    """pyfunc face of an inference checkpoint, served by
    :class:`pac.evaluation.rollout.PolicyServer`.

    Input: rows of ``instruction`` (task name, e.g. ``cartpole.balance``) and ``proprio`` (the
    task's flattened observation); the type hints give MLflow the signature and validate input.
    Output: one action list per row (greedy decoding: the most likely bin of every action
    dimension).
    """

    def load_context(self, context: Any) -> None:
        from pac.evaluation.rollout import PolicyServer

        self.server = PolicyServer.load(context.artifacts["checkpoint"], decode="argmax")

    def predict(self, model_input: list[PolicyInput], params: dict[str, Any] | None = None
                ) -> list[list[float]]:
        return [self.server.act(np.asarray(row.proprio, dtype=np.float32), row.instruction)
                .tolist() for row in model_input]


if __name__.startswith("code_model_"):  # executed by MLflow as the logged model's code file
    mlflow.models.set_model(PACPolicyModel())
