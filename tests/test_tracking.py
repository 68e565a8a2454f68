"""pac.tracking against a real sqlite MLflow store: params, metrics, nesting, resume, artefacts."""

from pathlib import Path

import pytest

from pac.config import load_config
from pac.tracking import (
    Tracker,
    artifact_location,
    get_run,
    list_artifacts,
    metric_history,
    tracking_uri,
)


def _config(root: Path):
    return load_config(overrides=[
        f"tracking.uri=sqlite:///{root}/mlruns/mlflow.db",
        f"tracking.artifact_dir={root}/mlruns/artifacts",
        "tracking.experiment=pac-test",
    ])


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One sqlite store for the module (creating one costs seconds)."""
    return tmp_path_factory.mktemp("tracking")


@pytest.fixture
def cfg(store, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return _config(store)


def test_uri_from_environment_wins(cfg, store, tmp_path, monkeypatch):
    assert tracking_uri(cfg) == f"sqlite:///{store}/mlruns/mlflow.db"
    assert (store / "mlruns").is_dir()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/other/db.sqlite")
    assert tracking_uri(cfg) == f"sqlite:///{tmp_path}/other/db.sqlite"
    assert (tmp_path / "other").is_dir()
    assert artifact_location(cfg) == (store / "mlruns" / "artifacts").as_uri()


def test_run_records_every_param_metric_and_artifact(cfg, store, tmp_path):
    parent = Tracker(cfg, run_name="flow")
    run = Tracker(cfg, run_name="pretrain", parent_run_id=parent.run_id, tags={"pac.stage": "x"})
    flat = cfg.flat()
    assert len(flat) > 100  # more than one MLflow batch
    run.log_params(flat | {"num_params": 123})
    run.log_metrics({"loss/total": 2.0, "loss/bc": 1.5, "nan_metric": float("nan")}, step=10)
    run.log_metrics({"loss/total": 1.0, "loss/bc": 0.5}, step=20)
    note = tmp_path / "note.txt"
    note.write_text("hello")
    run.log_artifact(note)
    run.finish()

    info = get_run(cfg, run.run_id)
    assert info["status"] == "FINISHED"
    assert info["tags"]["mlflow.parentRunId"] == parent.run_id
    assert info["artifact_uri"].startswith((store / "mlruns" / "artifacts").as_uri())
    for group in cfg.data.groups:  # every alpha/beta/eta per dataset group
        for key in ("alpha", "beta", "weight", "quality"):
            assert f"data.groups.{group.name}.{key}" in info["params"]
    assert info["params"]["loss.eta"] == str(cfg.loss.eta)
    assert info["params"]["num_params"] == "123"
    assert metric_history(cfg, run.run_id, "loss/total") == [(10, 2.0), (20, 1.0)]
    assert "nan_metric" not in info["metrics"]
    assert list_artifacts(cfg, run.run_id) == ["note.txt"]


def test_resumed_run_keeps_its_params_and_continues_metrics(cfg):
    first = Tracker(cfg, run_name="pretrain")
    first.log_params({"train.steps": 10, "loss.alpha": 0.75})
    first.log_metrics({"loss/total": 3.0}, step=5)
    again = Tracker(cfg, run_name="pretrain", run_id=first.run_id)
    again.log_params({"train.steps": 20, "loss.beta": 38.0})  # existing key kept, new one added
    again.log_metrics({"loss/total": 2.0}, step=10)
    again.finish()
    info = get_run(cfg, first.run_id)
    assert info["params"]["train.steps"] == "10" and info["params"]["loss.beta"] == "38.0"
    assert metric_history(cfg, first.run_id, "loss/total") == [(5, 3.0), (10, 2.0)]


def test_disabled_tracker_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    off = Tracker(_config(tmp_path), run_name="rank1", enabled=False)
    off.log_params({"a": 1})
    off.log_metrics({"b": 2.0}, step=1)
    off.finish()
    assert off.run_id is None
    assert not Path(tmp_path / "mlruns" / "mlflow.db").exists()


def test_unknown_parent_run_fails_clearly(cfg):
    with pytest.raises(Exception, match="(?i)run"):
        Tracker(cfg, run_name="child", parent_run_id="0" * 32)


def test_fluent_calls_leave_the_process_environment_alone(cfg, tmp_path):
    """download_artifacts must not export MLFLOW_TRACKING_URI (it would redirect later runs)."""
    import os

    from pac.tracking import download_artifacts

    run = Tracker(cfg, run_name="artefact")
    (tmp_path / "note.txt").write_text("hello")
    run.log_artifact(tmp_path / "note.txt")
    run.finish()
    got = download_artifacts(cfg, f"runs:/{run.run_id}/note.txt", tmp_path / "dl")
    assert got.read_text() == "hello"
    assert "MLFLOW_TRACKING_URI" not in os.environ


def test_a_table_logged_twice_holds_its_rows_once(cfg, tmp_path):
    """Two steps logging the same table (evaluate_join, then finish) leave one copy of each row
    (MLflow's log_table alone appends), still in MLflow's table layout."""
    import json

    from pac.tracking import download_artifacts

    run = Tracker(cfg, run_name="flow")
    rows = [{"name": "cartpole.balance", "success_rate": 70.0},
            {"name": "reacher.easy", "success_rate": float("nan")}]
    run.log_table(rows, "evaluation/results_table.json")
    run.log_table(rows, "evaluation/results_table.json")
    got = download_artifacts(cfg, f"runs:/{run.run_id}/evaluation/results_table.json", tmp_path)
    table = json.loads(got.read_text())
    assert table["columns"] == ["name", "success_rate"]
    assert table["data"] == [["cartpole.balance", 70.0], ["reacher.easy", None]]
    logged = json.loads(get_run(cfg, run.run_id)["tags"]["mlflow.loggedArtifacts"])
    assert logged == [{"path": "evaluation/results_table.json", "type": "table"}]


def test_a_copied_store_loads_the_champion_with_the_original_gone(tmp_path, monkeypatch):
    """mlruns/ copied elsewhere and the original deleted: the champion loads from the copy with
    plain MLflow (after pac opened the store once) and predicts; nothing points at the old
    folder any more."""
    import shutil
    import sqlite3

    import mlflow
    from eval_helpers import tiny_checkpoint

    from pac.tracking import register_policy, set_model_alias

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    policy = tiny_checkpoint(tmp_path / "ckpt")
    first = _config(tmp_path / "a")
    run = Tracker(first, run_name="pretrain")
    set_model_alias(first, "champion", register_policy(first, run.log_policy(policy)))
    run.finish()
    shutil.copytree(tmp_path / "a" / "mlruns", tmp_path / "b" / "mlruns")
    shutil.rmtree(tmp_path / "a")

    moved = _config(tmp_path / "b")
    uri = tracking_uri(moved)  # what every pac command does first
    with sqlite3.connect(tmp_path / "b" / "mlruns" / "mlflow.db") as con:
        text = "".join(str(r) for t in ("experiments", "runs", "logged_models", "model_versions")
                       for r in con.execute(f"SELECT * FROM {t}"))  # noqa: S608
    assert str(tmp_path / "a") not in text and str(tmp_path / "b" / "mlruns") in text
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    model = mlflow.pyfunc.load_model("models:/pac-policy@champion")
    from pac.tasks import TASKS

    task = "point_mass.easy"
    action = model.predict([{"instruction": task, "proprio": [0.0] * TASKS[task].num_proprio}])
    assert len(action) == 1 and len(action[0]) == TASKS[task].num_actions
    assert all(-1.0 <= a <= 1.0 for a in action[0])
