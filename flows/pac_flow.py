"""The PAC pipeline as a Metaflow flow.

    start ─► data ─┬─► pretrain ────────────────────────────────┬─► evaluate_split
                   └─► pretrain_launch ─► pretrain_nodes (xN) ─► pretrain_join ─┘
    evaluate_split ─► evaluate (foreach domain) ─► evaluate_join ─► rlft ⟲ (one round a pass) ─► end

Run on a laptop with the embedded defaults (one DeepSpeed process, tiny model, dm_control):

    python flows/pac_flow.py run

Scale out with a preset and Metaflow's own compute decorators (multi-node ZeRO over NCCL):

    python flows/pac_flow.py run --params-file params/presets/L.yaml --nodes 4 --gpus-per-node 8 \\
        --with kubernetes:gpu=8,memory=400000

Every step calls one library function; MLflow holds a parent run (tag pac_role=flow) with nested
runs for pretraining, each evaluation and each RLFT round. Metaflow artefacts keep the MLflow
run ids, and the MLflow run keeps the Metaflow pathspec, so either side finds the other.
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path

from metaflow import FlowSpec, Parameter, card, current, parallel, resources, step


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
    alpha = Parameter("alpha", default=-1.0, type=float,
                      help="override loss.alpha (BC weight, eq. 11); -1 keeps the params value")
    beta = Parameter("beta", default=-1.0, type=float,
                     help="override loss.beta (Q loss scale, eq. 11); -1 keeps the params value")
    rounds = Parameter("rounds", default=-1, type=int,
                       help="RLFT rounds (§4.3); -1 keeps rlft.rounds from params")
    nodes = Parameter("nodes", default=0, type=int,
                      help="0: pretrain in one local process; N: Metaflow @parallel over N nodes"
                      " (torchrun + DeepSpeed on each; add --with kubernetes or batch)")
    gpus_per_node = Parameter("gpus-per-node", default=1, type=int,
                              help="processes (GPUs) per node when --nodes > 0")

    @step
    def start(self):
        """Validate params before any compute; open the MLflow parent run."""
        from pac.pipeline import Settings, flow_overrides, run_workspace_overrides
        from pac.tracking import Tracker

        overrides = flow_overrides(self.overrides, self.scale, self.alpha, self.beta, self.rounds)
        self.settings = Settings(self.params_file,
                                 run_workspace_overrides(overrides, current.run_id))
        cfg = self.settings.config()  # raises ConfigError naming the bad key
        self.config = cfg.to_dict()
        self.started = time.time()
        tracker = Tracker(cfg, "pac-flow", tags={
            "pac_role": "flow", "metaflow.pathspec": current.pathspec.rsplit("/", 2)[0],
            "metaflow.run_id": current.run_id})
        tracker.log_params(cfg.flat() | {"flow.params_file": self.params_file,
                                         "flow.overrides": ";".join(self.settings.overrides),
                                         "flow.nodes": self.nodes})
        self.mlflow_run_id = tracker.run_id
        self.mode = "distributed" if self.nodes > 0 else "local"
        self.next(self.data)

    @step
    def data(self):
        """Reproduce the DVC data stages (generate, tokenizer); record the dataset version."""
        from pac.pipeline import version_data
        from pac.tracking import Tracker

        self.data_version = version_data(self.settings)
        cfg = self.settings.config()
        Tracker(cfg, "", run_id=self.mlflow_run_id).log_params(
            {f"data_version.{k}": v for k, v in self.data_version.items()})
        self.next({"local": self.pretrain, "distributed": self.pretrain_launch},
                  condition="mode")

    @resources(cpu=2, memory=8000)
    @step
    def pretrain(self):
        """DeepSpeed ZeRO pretraining in one local process (gloo on CPU)."""
        from pac.train import train

        result = train(self.settings.config(), tracking_parent_run=self.mlflow_run_id)
        self.policy_dir = str(result.policy_dir)
        self.pretrain_run_id = result.run_id
        self.train_history = result.history
        self.next(self.evaluate_split)

    @step
    def pretrain_launch(self):
        self.next(self.pretrain_nodes, num_parallel=self.nodes)

    @parallel
    @resources(cpu=8, gpu=1, memory=64000)
    @step
    def pretrain_nodes(self):
        """One node of multi-node pretraining: torchrun starts gpus-per-node DeepSpeed ranks."""
        from pac.pipeline import distributed_train_command, run_distributed_node

        run_distributed_node(distributed_train_command(
            self.settings, current.parallel.num_nodes, current.parallel.node_index,
            current.parallel.main_ip, self.gpus_per_node, self.mlflow_run_id))
        self.node_index = current.parallel.node_index
        self.next(self.pretrain_join)

    @step
    def pretrain_join(self, inputs):
        from pac.train import TrainResult  # noqa: F401  (documents what the nodes produced)

        self.merge_artifacts(inputs, exclude=["node_index"])
        cfg = self.settings.config()
        self.policy_dir = str(Path(cfg.train.out_dir) / "policy")
        self.pretrain_run_id = None
        self.train_history = []
        self.next(self.evaluate_split)

    @step
    def evaluate_split(self):
        """One evaluation branch per domain (cartpole, point_mass, ...)."""
        from pac.evaluate import default_tasks

        tasks = default_tasks(self.settings.config())
        domains: dict[str, list[str]] = {}
        for task in tasks:
            domains.setdefault(task.split(".")[0], []).append(task)
        self.domains = sorted(domains.items())
        self.next(self.evaluate, foreach="domains")

    @card
    @step
    def evaluate(self):
        """dm_control rollouts of the pretrained policy for one domain (nested MLflow run)."""
        from pac.evaluate import evaluate

        self.domain, tasks = self.input
        cfg = self.settings.config()
        result = evaluate(cfg, self.policy_dir, tasks,
                          out_dir=Path(cfg.eval.out_dir) / self.domain,
                          tracking_parent_run=self.mlflow_run_id)
        self.eval_dir = str(result.out_dir)
        self.eval_run_id = result.mlflow_run_id
        from metaflow.cards import Markdown

        current.card.append(Markdown(result.table))
        self.next(self.evaluate_join)

    @card
    @step
    def evaluate_join(self, inputs):
        """The evaluation table over all domains (paper layout), plots, MLflow artefacts."""
        from pac.evaluate import merge_evaluations
        from pac.plots import learning_curves, success_bars
        from pac.tracking import Tracker

        self.merge_artifacts(inputs, include=["settings", "config", "mlflow_run_id", "policy_dir",
                                              "pretrain_run_id", "train_history", "started",
                                              "data_version"])
        self.eval_run_ids = [i.eval_run_id for i in inputs]
        cfg = self.settings.config()
        merged = merge_evaluations([i.eval_dir for i in inputs], cfg.eval.out_dir, cfg)
        self.eval_table = merged.table
        self.eval_rows = merged.rows
        tracker = Tracker(cfg, "", run_id=self.mlflow_run_id)
        for name in ("results.md", "results.csv", "metrics.json"):
            tracker.log_artifact(merged.out_dir / name, "evaluation")
        from metaflow.cards import Image, Markdown

        current.card.append(Markdown(self.eval_table))
        current.card.append(Image.from_matplotlib(success_bars(self.eval_rows)))
        if self.train_history:
            current.card.append(Image.from_matplotlib(learning_curves(self.train_history)))
        self.round = 0
        self.rounds_total = cfg.rlft.rounds
        self.rlft_rows = []
        self.next(self.rlft)

    @card
    @step
    def rlft(self):
        """One RL fine-tuning round per pass (collect, ingest, fine-tune, evaluate); loops."""
        if self.round < self.rounds_total:
            from pac.rlft import rlft

            self.round += 1
            cfg = self.settings.config()
            # resume=True continues the rounds table of earlier passes; the first pass also
            # evaluates the pretrained policy as round 0.
            # fresh=True on the first pass sets an earlier run's rollouts group aside (renamed,
            # never deleted) so that this run's rounds start from its own pretrained policy.
            result = rlft(cfg, self.policy_dir, rounds=self.round, resume=self.round > 1,
                          fresh=self.round == 1, tracking_parent_run=self.mlflow_run_id)
            self.rlft_rows = [dataclasses.asdict(r) for r in result.rows]
            self.rlft_policy_dir = str(result.policy)
            self.rlft_run_id = result.run_id
            from metaflow.cards import Image, Markdown

            from pac.plots import rlft_rounds

            current.card.append(Markdown((Path(cfg.rlft.out_dir) / "rounds.md").read_text()))
            current.card.append(Image.from_matplotlib(rlft_rounds(self.rlft_rows)))
        self.more = "again" if self.round < self.rounds_total else "done"
        self.next({"again": self.rlft, "done": self.end}, condition="more")

    @step
    def end(self):
        """Register the final policy, write its model card, close the MLflow parent run."""
        from pac.pipeline import finish

        cfg = self.settings.config()
        rounds_md = Path(cfg.rlft.out_dir) / "rounds.md"
        summary = finish(
            cfg,
            policy_dir=getattr(self, "rlft_policy_dir", None) or self.policy_dir,
            mlflow_run_id=self.mlflow_run_id,
            started=self.started,
            data_version=self.data_version,
            eval_table=self.eval_table,
            rlft_table=rounds_md.read_text() if self.rlft_rows else "",
            metaflow_pathspec=f"{current.flow_name}/{current.run_id}",
        )
        self.model_card = summary["model_card"]
        self.registered_version = summary["registered_version"]
        print(summary["text"])


if __name__ == "__main__":
    os.environ.setdefault("USERNAME", "pac")
    PACFlow()
