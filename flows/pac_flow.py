"""The PAC pipeline as a Metaflow flow.

    start ─► data ─┬─► pretrain ────────────────────────────────┬─► evaluate_split
                   └─► pretrain_launch ─► pretrain_nodes (xN) ─► pretrain_join ─┘
    evaluate_split ─► evaluate (foreach domain) ─► evaluate_join ─► rlft ⟲ (one round a pass) ─► end

The tasks without a simulator (a robot's data) form one more evaluation branch, `offline`:
held-out episodes instead of rollouts (pac.evaluation.offline).

Run on a laptop with the embedded defaults (one DeepSpeed process, tiny model, dm_control):

    python flows/pac_flow.py run

Scale out with a preset and Metaflow's own compute decorators (multi-node ZeRO over NCCL):

    python flows/pac_flow.py run --params-file params/presets/L.yaml --nodes 4 --gpus-per-node 8 \\
        --with kubernetes:gpu=8,memory=400000

Every step calls one library function; MLflow holds a parent run (tag pac_role=flow) with nested
runs `pretrain-<scale>`, `eval-<domain>` and `rlft` (with `rlft-round-<k>`). The parent run is the
dashboard: the handed-over policy's success and % of expert with their intervals, the per-round
success, the champion version, a generated description, tables and figures. Metaflow artefacts
keep the MLflow run ids, and the MLflow run keeps the Metaflow pathspec, so either side finds
the other. Params are checked before Metaflow starts (one line on a bad value, exit status 2)
and again in `start`.

Fault tolerance (docs/faults_and_resume.md, "Resuming a killed flow run"): one flow run at a time
per checkout (`runs/flow.lock`, taken in `start`: a second run is refused there with one line; a
dead run's lock or that of the run a `resume` continues does not block); a retried or resumed
`pretrain` continues from the newest complete checkpoint of this flow run and its MLflow run; a
rerun `evaluate` continues the MLflow runs its killed attempt recorded; a resumed `rlft` skips the
stages of a round its killed attempt finished; `@retry` sits on `data`, `pretrain`, `evaluate` and
`evaluate_join`, the steps whose rerun duplicates nothing.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import tempfile
import time
from pathlib import Path

from metaflow import FlowSpec, Parameter, card, current, parallel, resources, retry, step

from pac.config import PACConfig, config_from_dict
from pac.pipeline import SAFE_RETRY
from pac.review.arms import BC_ARM

#: the evaluation branch of the tasks without a simulator (pac.evaluation.offline)
OFFLINE = "offline"


class PACFlow(FlowSpec):
    """PAC: data (DVC) -> DeepSpeed pretraining -> dm_control evaluation -> RLFT rounds."""

    params_file = Parameter(
        "params-file", default="params/default.yaml",
        help="params YAML file (validated before any compute); presets in params/presets/",
    )
    overrides = Parameter(
        "set", default="",
        help="';'-separated KEY=VALUE overrides, e.g. 'train.steps=50;eval.episodes_per_task=5'",
    )
    scale = Parameter("scale", default="", help="model scale: tiny, XXS, XS, S, M, L, card15B")
    alpha = Parameter("alpha", default=None, type=float,
                      help="override loss.alpha (BC weight, eq. 11); default: the params file's")
    beta = Parameter("beta", default=None, type=float,
                     help="override loss.beta (Q loss scale, eq. 11); default: the params file's")
    rounds = Parameter("rounds", default=None, type=int,
                       help="RLFT rounds (§4.3); default: rlft.rounds of the params file")
    nodes = Parameter("nodes", default=0, type=int,
                      help="0: pretrain in one local process; N: Metaflow @parallel over N nodes"
                      " (torchrun + DeepSpeed on each; add --with kubernetes or batch)")
    gpus_per_node = Parameter("gpus-per-node", default=1, type=int,
                              help="processes (GPUs) per node when --nodes > 0")

    @card
    @step
    def start(self):
        """Take the checkout's flow lock (a second flow run started here meanwhile is refused
        before it writes anything), validate params, open the MLflow parent run."""
        from metaflow.cards import Markdown

        from pac.pipeline import (
            Settings,
            flow_overrides,
            resolved_flow_values,
            run_workspace_overrides,
        )
        from pac.tracking import Tracker

        self._hold_lock()
        overrides = flow_overrides(self.overrides, self.scale, self.alpha, self.beta, self.rounds)
        self.settings = Settings(self.params_file,
                                 run_workspace_overrides(overrides, current.run_id))
        cfg = self.settings.config()  # raises ConfigError naming the bad key
        self.config = cfg.to_dict()
        self.values_used = resolved_flow_values(cfg, self.params_file, self.settings.overrides)
        current.card.append(Markdown("## Settings used\n\n| setting | value |\n|---|---|\n"
                                     + "".join(f"| {k} | {v} |\n"
                                               for k, v in self.values_used.items())))
        self.started = time.time()
        tracker = Tracker(cfg, "pac-flow", tags={
            "pac_role": "flow", "metaflow.pathspec": current.pathspec.rsplit("/", 2)[0],
            "metaflow.run_id": current.run_id})
        tracker.log_params(cfg.flat() | {"flow.params_file": self.params_file,
                                         "flow.overrides": ";".join(self.settings.overrides),
                                         "flow.nodes": self.nodes})
        self.mlflow_run_id = tracker.run_id
        # The run whose output folders these are: a resumed run clones `start`, so it keeps
        # its origin's id here (as in the out_dirs), however many times it is resumed.
        self.flow_run = current.run_id
        self.mode = "distributed" if self.nodes > 0 else "local"
        self.next(self.data)

    @retry(**SAFE_RETRY)
    @step
    def data(self):
        """Reproduce the DVC data stages (generate, tokenizer); record the dataset version."""
        self._hold_lock()
        from pac.pipeline import data_step

        self.data_version = data_step(self.settings, self.mlflow_run_id, self._config())
        self.next({"local": self.pretrain, "distributed": self.pretrain_launch},
                  condition="mode")

    @retry(**SAFE_RETRY)
    @resources(cpu=2, memory=8000)
    @step
    def pretrain(self):
        """DeepSpeed ZeRO pretraining in one local process (gloo on CPU); a retry or a
        `resume` continues from the newest complete checkpoint of this flow run."""
        self._hold_lock()
        from pac.pipeline import pretrain

        cfg = self._config()
        result = pretrain(cfg, self._flow_run(), self.mlflow_run_id)
        self.policy_dir = str(result.policy_dir)
        self.pretrain_run_id = result.run_id
        self.train_history = result.history  # the run logs its dataset inputs itself
        self.next(self.evaluate_split)

    def _config(self) -> PACConfig:
        """The settings `start` validated (its `config` artefact): a retried or resumed step
        runs with them even when the params file was edited since."""
        return config_from_dict(self.config)

    def _flow_run(self) -> str:
        """The flow run the output folders belong to (see `start`)."""
        return getattr(self, "flow_run", None) or current.origin_run_id or current.run_id

    def _lock_runs(self) -> tuple[str, tuple[str | None, ...]]:
        """This run and the runs it continues (a `resume`'s origin, the first run's id)."""
        name = current.flow_name
        origins = (current.origin_run_id, getattr(self, "flow_run", None))
        return f"{name}/{current.run_id}", tuple(f"{name}/{o}" for o in origins if o)

    def _hold_lock(self) -> None:
        """Hold runs/flow.lock for this run (`pac.pipeline.hold_flow_lock`): a local task is a
        child process of the Metaflow runtime, whose PID the lock records. Another live run's
        lock fails the step with its one-line message."""
        from pac.pipeline import FlowRunning, hold_flow_lock

        run, origins = self._lock_runs()
        try:
            hold_flow_lock(run, os.getppid(), origins)
        except FlowRunning as exc:
            print(f"pac: {exc}", file=sys.stderr, flush=True)
            raise SystemExit(1) from None

    @step
    def pretrain_launch(self):
        """Claim train.out_dir for this flow run; the nodes then train with --resume."""
        self._hold_lock()
        from pac.pipeline import claim_train_dir

        claim_train_dir(self._config().train.out_dir, self._flow_run())
        self.next(self.pretrain_nodes, num_parallel=self.nodes)

    @parallel
    @resources(cpu=8, gpu=1, memory=64000)
    @step
    def pretrain_nodes(self):
        """One node of multi-node pretraining: torchrun starts gpus-per-node DeepSpeed ranks."""
        from pac.pipeline import distributed_train_command, frozen_settings, run_distributed_node

        with tempfile.TemporaryDirectory() as tmp:
            run_distributed_node(distributed_train_command(
                frozen_settings(self._config(), tmp), current.parallel.num_nodes,
                current.parallel.node_index, current.parallel.main_ip, self.gpus_per_node,
                self.mlflow_run_id))
        self.node_index = current.parallel.node_index
        self.next(self.pretrain_join)

    @step
    def pretrain_join(self, inputs):
        self._hold_lock()
        from pac.train import TrainResult  # noqa: F401  (documents what the nodes produced)

        self.merge_artifacts(inputs, exclude=["node_index"])
        cfg = self._config()
        self.policy_dir = str(Path(cfg.train.out_dir) / "policy")
        self.pretrain_run_id = None
        self.train_history = []
        self.next(self.evaluate_split)

    @step
    def evaluate_split(self):
        """One evaluation branch per domain (cartpole, point_mass, ...); the tasks without a
        simulator (a robot's data) together in one more branch, ``offline``."""
        self._hold_lock()
        from pac.evaluation.evaluator import default_tasks, split_by_simulator

        tasks, offline = split_by_simulator(default_tasks(self._config()))
        domains: dict[str, list[str]] = {}
        for task in tasks:
            domains.setdefault(task.split(".")[0], []).append(task)
        self.domains = sorted(domains.items()) + ([(OFFLINE, offline)] if offline else [])
        if self._config().eval.bc_baseline and tasks:  # the BC arm: trained, then evaluated
            self.domains.append((BC_ARM, tasks))
        self.next(self.evaluate, foreach="domains")

    @retry(**SAFE_RETRY)
    @card
    @step
    def evaluate(self):
        """dm_control rollouts of the pretrained policy for one domain (nested MLflow run);
        the ``offline`` branch: the tasks without a simulator on their held-out episodes."""
        self._hold_lock()
        from metaflow.cards import Image, Markdown

        from pac.evaluation.evaluator import evaluate

        self.domain, tasks = self.input
        cfg = self._config()
        self.offline_dir = self.bc = None
        if self.domain == BC_ARM:  # eval.bc_baseline: BC on the same data, then every task
            from pac.pipeline import bc_arm_config, pretrain

            bc_cfg = bc_arm_config(cfg)
            trained = pretrain(bc_cfg, self._flow_run(), self.mlflow_run_id,
                               run_name=f"pretrain-{BC_ARM}-{cfg.model.scale}")
            result = evaluate(bc_cfg, trained.policy_dir, tasks, out_dir=bc_cfg.eval.out_dir,
                              tracking_parent_run=self.mlflow_run_id, run_name=f"eval-{BC_ARM}")
            self.eval_dir, self.eval_run_id = None, result.mlflow_run_id
            self.bc = {"policy_dir": str(trained.policy_dir), "run_id": trained.run_id,
                       "rows": result.rows, "table": result.table}
            current.card.append(Markdown(result.table))
            self.next(self.evaluate_join)
            return
        if self.domain == OFFLINE:
            from pac.evaluation.offline import evaluate_offline

            done = evaluate_offline(cfg, self.policy_dir, tasks,
                                    out_dir=Path(cfg.eval.out_dir) / OFFLINE,
                                    tracking_parent_run=self.mlflow_run_id)
            self.eval_dir, self.offline_dir = None, str(done.out_dir)
            self.eval_run_id = done.mlflow_run_id
            current.card.append(Markdown(done.table))
            current.card.append(Image((done.out_dir / "calibration.png").read_bytes()))
            self.next(self.evaluate_join)
            return
        result = evaluate(cfg, self.policy_dir, tasks,
                          out_dir=Path(cfg.eval.out_dir) / self.domain,
                          tracking_parent_run=self.mlflow_run_id)
        self.eval_dir = str(result.out_dir)
        self.eval_run_id = result.mlflow_run_id
        current.card.append(Markdown(result.table))
        self.next(self.evaluate_join)

    @retry(**SAFE_RETRY)
    @card
    @step
    def evaluate_join(self, inputs):
        """The evaluation table over all domains (paper layout), plots, MLflow artefacts."""
        self._hold_lock()
        from pac.evaluation.evaluator import log_videos, merge_evaluations
        from pac.plots import learning_curves, success_bars
        from pac.tracking import Tracker

        self.merge_artifacts(inputs, include=["settings", "config", "mlflow_run_id", "policy_dir",
                                              "pretrain_run_id", "train_history", "started",
                                              "data_version"])
        self.eval_run_ids = [i.eval_run_id for i in inputs]
        self.eval_runs = {f"eval-{i.domain}": i.eval_run_id for i in inputs}
        cfg = self._config()
        from metaflow.cards import Image, Markdown

        tracker = Tracker(cfg, "", run_id=self.mlflow_run_id)
        rolled = [i.eval_dir for i in inputs if i.eval_dir]
        self.eval_table, self.eval_rows = "", []
        if rolled:
            merged = merge_evaluations(rolled, cfg.eval.out_dir, cfg)
            self.eval_table = merged.table
            self.eval_rows = merged.rows
            for name in ("results.md", "results.csv", "metrics.json"):
                tracker.log_artifact(merged.out_dir / name, "evaluation")
            log_videos(cfg, self.mlflow_run_id, merged.videos)  # every domain's, on the parent
            current.card.append(Markdown(self.eval_table))
            current.card.append(Image.from_matplotlib(success_bars(self.eval_rows)))
        offline = [Path(i.offline_dir) for i in inputs if getattr(i, "offline_dir", None)]
        self.offline_dirs = [str(f) for f in offline]
        for folder in offline:  # the tasks without a simulator: in the review's table too
            table = (folder / "offline.md").read_text()
            self.eval_table = f"{self.eval_table.rstrip()}\n\n{table}".lstrip()
            current.card.append(Markdown(table))
            current.card.append(Image((folder / "calibration.png").read_bytes()))
        self.arms = None
        bc = next((i.bc for i in inputs if getattr(i, "bc", None)), None)
        if bc is not None:  # eval.bc_baseline: compare, and hand over BC only beyond noise
            from pac.review.arms import arms_markdown, review_arms

            review = review_arms(self.eval_rows, bc["rows"])
            self.arms = {"markdown": arms_markdown(review), "tags": review.tags(),
                         "bc_run_id": bc["run_id"], "bc_rows": bc["rows"]}
            current.card.append(Markdown(self.arms["markdown"]))
            if review.handed_over == "BC":  # RLFT and the hand-over continue from BC
                self.arms["pac_run_id"] = self.pretrain_run_id
                self.policy_dir, self.pretrain_run_id = bc["policy_dir"], bc["run_id"]
                self.eval_rows, self.eval_table = bc["rows"], bc["table"]
        if self.train_history:
            current.card.append(Image.from_matplotlib(learning_curves(self.train_history)))
        tracker.log_table(self.eval_rows, "evaluation/results_table.json")
        self.round = 0
        self.rounds_total = cfg.rlft.rounds
        self.rlft_rows = []
        self.next(self.rlft)

    @card
    @step
    def rlft(self):
        """One RL fine-tuning round per pass (collect, ingest, fine-tune, evaluate); loops."""
        self._hold_lock()
        if self.round < self.rounds_total:
            from pac.rlft.rounds import STATE_FILE, rlft

            self.round += 1
            cfg = self._config()
            # resume=True continues this flow run's rounds (rlft.out_dir is its own): those of
            # earlier passes, and the stages a killed or failed attempt of this pass finished
            # (a retry or a `resume` collects and ingests nothing twice). The first pass also
            # evaluates the pretrained policy as round 0.
            # fresh=True when this run has no rounds yet: an earlier run's rollouts group is set
            # aside (renamed, never deleted) so that the rounds start from this run's policy.
            own = (Path(cfg.rlft.out_dir) / STATE_FILE).is_file()
            pretrained_uri = (f"runs:/{self.pretrain_run_id}/policy_model"
                              if self.pretrain_run_id else None)
            result = rlft(cfg, self.policy_dir, rounds=self.round, resume=own,
                          fresh=not own, tracking_parent_run=self.mlflow_run_id,
                          checkpoint_model_uri=pretrained_uri, version_tags={
                              "pac.flow_run": self.mlflow_run_id,
                              "metaflow.pathspec": f"{current.flow_name}/{current.run_id}"})
            self.rlft_rows = [dataclasses.asdict(r) for r in result.rows]
            self.rlft_policy_dir = str(result.policy)
            self.rlft_run_id = result.run_id
            from metaflow.cards import Image, Markdown

            from pac.plots import rlft_rounds

            best = result.champion
            current.card.append(Markdown((Path(cfg.rlft.out_dir) / "rounds.md").read_text()))
            current.card.append(Image.from_matplotlib(
                rlft_rounds(self.rlft_rows, best.round if best else None)))
        self.more = "again" if self.round < self.rounds_total else "done"
        self.next({"again": self.rlft, "done": self.end}, condition="more")

    @step
    def end(self):
        """Hand over the best-evaluated policy (the `champion` version), write its model card,
        make the MLflow parent run the dashboard and close it."""
        self._hold_lock()
        from pac.pipeline import finish

        cfg = self._config()
        rounds_md = Path(cfg.rlft.out_dir) / "rounds.md"
        arms = getattr(self, "arms", None)
        children = {"pretrain": (arms or {}).get("pac_run_id", self.pretrain_run_id)}
        if arms:
            children["pretrain-bc"] = arms["bc_run_id"]
        children |= dict(sorted(self.eval_runs.items()))
        children["rlft"] = getattr(self, "rlft_run_id", None)
        summary = finish(
            cfg,
            policy_dir=self.policy_dir,
            mlflow_run_id=self.mlflow_run_id,
            started=self.started,
            data_version=self.data_version,
            eval_table=self.eval_table,
            eval_rows=self.eval_rows,
            offline_dirs=getattr(self, "offline_dirs", []),
            arms=arms,
            rlft_table=rounds_md.read_text() if self.rlft_rows else "",
            rlft_rows=self.rlft_rows,
            train_history=self.train_history,
            policy_model_uri=(f"runs:/{self.pretrain_run_id}/policy_model"
                              if self.pretrain_run_id else None),
            metaflow_pathspec=f"{current.flow_name}/{current.run_id}",
            children={k: v for k, v in children.items() if v},
        )
        self.model_card = summary["model_card"]
        self.registered_version = summary["registered_version"]
        self.champion_round = summary["champion_round"]
        self.figures = summary["figures"]
        from pac.pipeline import release_flow_lock

        run, origins = self._lock_runs()
        release_flow_lock((run, *origins))
        print(summary["text"])


if __name__ == "__main__":
    os.environ.setdefault("USERNAME", "pac")
    from pac.pipeline import check_flow_argv

    problem = check_flow_argv(sys.argv[1:])  # before Metaflow: one line, not a traceback
    if problem:
        print(f"pac: invalid params: {problem}", file=sys.stderr)
        sys.exit(2)
    PACFlow()
