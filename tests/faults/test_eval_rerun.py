"""An evaluation rerun into its folder under the same parent run (a resumed flow `evaluate`, a
resumed RLFT round) continues the MLflow runs its killed attempt opened: the state a kill
leaves is made with MLflow's own client (recorded runs RUNNING, one more RUNNING run that the
attempt opened and had not recorded), then the rerun must leave one FINISHED run per name."""

from __future__ import annotations

import json


def test_a_rerun_evaluation_continues_its_recorded_runs_and_ends_an_unrecorded_one(tmp_path):
    from pac.config import load_config
    from pac.evaluation.evaluator import EVAL_RUN_FILE, evaluate
    from pac.tracking import Tracker, client

    cfg = load_config(overrides=[
        f"tracking.uri=sqlite:///{tmp_path / 'ml.db'}",
        f"tracking.artifact_dir={tmp_path / 'artifacts'}", "eval.episodes_per_task=1",
        "eval.max_steps=5", "eval.workers=1", "eval.videos_per_task=0"])
    tasks = ["reacher.easy", "reacher.hard"]
    parent = Tracker(cfg, "pac-flow").run_id
    out = tmp_path / "eval"
    first = evaluate(cfg, tasks=tasks, policy="random", out_dir=out, tracking_parent_run=parent)
    recorded = json.loads((out / EVAL_RUN_FILE).read_text())
    assert recorded["parent"] == parent
    names = ["eval-reacher", "eval-reacher.easy", "eval-reacher.hard"]
    assert sorted(recorded["runs"]) == names and recorded["runs"][names[0]] == first.mlflow_run_id
    mlc = client(cfg)
    for run_id in recorded["runs"].values():  # killed while logging: never closed
        mlc.update_run(run_id, status="RUNNING")
    orphan = Tracker(cfg, "eval-reacher.hard", parent_run_id=first.mlflow_run_id).run_id

    again = evaluate(cfg, tasks=tasks, policy="random", out_dir=out, tracking_parent_run=parent)
    assert again.mlflow_run_id == first.mlflow_run_id
    every = {r.info.run_id: r for r in mlc.search_runs([mlc.get_run(parent).info.experiment_id])}
    status = {name: sorted(r.info.status for r in every.values() if r.info.run_name == name)
              for name in {r.info.run_name for r in every.values()}}
    assert status == {"pac-flow": ["RUNNING"], "eval-reacher": ["FINISHED"],
                      "eval-reacher.easy": ["FINISHED"],
                      "eval-reacher.hard": ["FINISHED", "KILLED"]}
    assert every[orphan].info.status == "KILLED"
    assert every[orphan].data.tags["pac.continued_in"] == recorded["runs"]["eval-reacher.hard"]
    # the continued run got no second point of the metrics it had
    assert len(mlc.get_metric_history(first.mlflow_run_id, "success_rate")) == 1
    # another parent (a new evaluation into the same folder) opens new runs
    other = Tracker(cfg, "pac-flow").run_id
    third = evaluate(cfg, tasks=tasks, policy="random", out_dir=out, tracking_parent_run=other)
    assert third.mlflow_run_id not in every
