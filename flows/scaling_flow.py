"""The scaling sweep of §4.1 (App. E.1) as a Metaflow flow.

    start ─► data ─► train (foreach member: family × size × seed) ─► join ─► fit ─► end

On a laptop (the laptop ladder: five sizes, PAC and BC+Q, one seed; params/presets/
scaling_laptop.yaml), at most two members at a time, one thread each:

    OMP_NUM_THREADS=1 python flows/scaling_flow.py run --max-workers 2

On a cluster, the paper's scales (params/presets/scaling_paper.yaml): one member per task on
Metaflow's own compute decorators, never a scheduler of the pipeline's own:

    python flows/scaling_flow.py run --params-file params/presets/scaling_paper.yaml \\
        --max-workers 10 --with kubernetes:gpu=1,cpu=8,memory=64000

Every step calls one library function (pac.pipeline, pac.scaling.sweep). `start` validates
the params and every member's config before any compute (one line on a bad value, exit status
2, as flows/pac_flow.py) and opens the MLflow parent run (tag pac_role=scaling-flow); `data`
is the main flow's data step; each `train` task is one member: the main flow's pretraining
(`pac.pipeline.pretrain`) with `train.eval_every` so that it has about six evaluation points,
in a nested MLflow run named after the member; `join` reads the members' eval_points.csv;
`fit` fits eq. 18 per run, the envelope and eq. 4 per family (`pac.scaling.laws`) and logs a,
b, N_0, D_0 with their intervals as the parent's params and metrics, the tables and figures
as its artefacts (and files under <scaling.out_dir>/<flow run>/fit); `end` closes the parent.

Resuming (`python flows/scaling_flow.py resume`): Metaflow reuses every member task that
finished in the origin run; a member that was killed or failed continues from the newest
complete checkpoint in its own train.out_dir (claimed for the origin flow run, as the main
flow's pretrain) and its own MLflow run. `@retry` on `data` and `train` does the same within
a run.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import asdict
from pathlib import Path

from metaflow import FlowSpec, Parameter, card, current, resources, retry, step

from pac.pipeline import SAFE_RETRY

DEFAULT_PARAMS = "params/presets/scaling_laptop.yaml"


class ScalingFlow(FlowSpec):
    """Scaling laws for offline RL: a sweep of PAC and BC+Q over model sizes, then the fit."""

    params_file = Parameter(
        "params-file", default=DEFAULT_PARAMS,
        help="params YAML file with a scaling: section (sizes, families, seeds); presets"
        " params/presets/scaling_laptop.yaml and scaling_paper.yaml",
    )
    overrides = Parameter(
        "set", default="",
        help="';'-separated KEY=VALUE overrides for every member, e.g. 'train.steps=50'",
    )
    bootstrap = Parameter("bootstrap", default=200, type=int,
                          help="parametric bootstrap draws of the exponents' intervals")
    window = Parameter("window", default="steps",
                       help="the envelope's FLOP window: steps (from the first to the last"
                       " change of selected size, as `pac scaling fit`) or observed (every"
                       " evaluated budget)")

    @step
    def start(self):
        """Validate params and every member before any compute; open the MLflow parent run."""
        from pac.config import ConfigError
        from pac.pipeline import Settings, flow_overrides
        from pac.scaling.sweep import WINDOWS, ladder_table, members
        from pac.tracking import Tracker

        if self.window not in WINDOWS or self.bootstrap < 0:
            raise ConfigError(f"--window {self.window!r} / --bootstrap {self.bootstrap}: the"
                              f" window is one of {', '.join(WINDOWS)}, bootstrap >= 0")
        self.settings = Settings(self.params_file, flow_overrides(self.overrides))
        cfg = self.settings.config()  # raises ConfigError naming the bad key
        # The run whose output folders these are: a resumed run clones `start`, so it keeps
        # its origin's id here (as in the members' out_dirs), however often it is resumed.
        self.flow_run = current.run_id
        ladder = members(self.params_file, self.settings.overrides, self.flow_run)
        self.members = [asdict(m) for m in ladder]
        # Started most expensive first (longest-processing-time order), so that the last
        # members to finish are short ones and --max-workers workers end close together.
        self.schedule = sorted(self.members, key=lambda m: -m["steps"] * m["flops_per_update"])
        self.ladder = ladder_table(ladder)
        self.out_dir = str(Path(cfg.scaling.out_dir) / self.flow_run)
        self.started = time.time()
        tracker = Tracker(cfg, "scaling-sweep", tags={
            "pac_role": "scaling-flow", "metaflow.pathspec": f"{current.flow_name}/"
            f"{current.run_id}", "metaflow.run_id": current.run_id})
        tracker.log_params(cfg.flat() | {"flow.params_file": self.params_file,
                                         "flow.overrides": ";".join(self.settings.overrides),
                                         "sweep.members": len(ladder)})
        tracker.set_description(f"## Scaling sweep (running)\n\n{self.ladder}\n")
        self.mlflow_run_id = tracker.run_id
        print(self.ladder)
        self.next(self.data)

    @retry(**SAFE_RETRY)
    @step
    def data(self):
        """The main flow's data step: build (or confirm) the data, record its version."""
        from pac.pipeline import data_step

        self.data_version = data_step(self.settings, self.mlflow_run_id)
        self.next(self.train, foreach="schedule")

    @retry(**SAFE_RETRY)
    @resources(cpu=2, memory=8000)
    @step
    def train(self):
        """One member: pretraining with evaluations during training (nested MLflow run); a
        retry or a `resume` continues from the member's newest complete checkpoint."""
        from pac.scaling.sweep import member_points, train_member

        self.member = self.input
        result = train_member(self.params_file, self.member, self.flow_run, self.mlflow_run_id)
        self.member_run_id = result.run_id
        self.member_dir = str(result.out_dir)
        self.points = member_points(result.out_dir)
        self.next(self.join)

    @step
    def join(self, inputs):
        """Every member's evaluation points, in the sweep's member order."""
        self.merge_artifacts(inputs, include=["settings", "mlflow_run_id", "flow_run",
                                              "members", "schedule", "ladder", "out_dir",
                                              "started", "data_version"])
        done = {i.member["name"]: i for i in inputs}
        order = [m["name"] for m in self.members]
        self.member_runs = {name: done[name].member_run_id for name in order}
        self.member_dirs = {name: done[name].member_dir for name in order}
        self.points = [row for name in order for row in done[name].points]
        self.next(self.fit)

    @card
    @step
    def fit(self):
        """§4.1: return profiles (eq. 18), envelope, eq. 4 per family, iso-return contours;
        the numbers and figures on the parent run."""
        from metaflow.cards import Image, Markdown

        from pac.scaling.sweep import fit_markdown, fit_sweep

        cfg = self.settings.config()
        fit = fit_sweep(cfg, self.points, Path(self.out_dir) / "fit", self.mlflow_run_id,
                        draws=self.bootstrap, window=self.window)
        self.fit_values = fit.values
        self.fit_summary = fit.summary
        self.fit_error = fit.error
        self.fit_files = fit.written
        self.fit_table = fit_markdown(fit)
        current.card.append(Markdown(f"## Scaling fit\n\n{self.fit_table}\n\n## Members\n\n"
                                     f"{self.ladder}"))
        for path in fit.written:
            if path.endswith(".png"):
                current.card.append(Image(Path(path).read_bytes(), label=Path(path).name))
        print(self.fit_table)
        self.next(self.end)

    @step
    def end(self):
        """The parent run's description (fit, members, links), then close it: FINISHED, or
        FAILED when there is no fit (pac.scaling_error says why)."""
        from pac.scaling.sweep import sweep_description
        from pac.tracking import Tracker

        cfg = self.settings.config()
        tracker = Tracker.existing(cfg, self.mlflow_run_id)
        wall = time.time() - self.started
        tracker.log_metrics({"wall_clock_s": wall}, step=0)
        tracker.set_description(sweep_description(
            tracker.client.get_run(self.mlflow_run_id).info.experiment_id, self.fit_table,
            self.ladder, self.member_runs, wall))
        tracker.finish("FAILED" if self.fit_error else "FINISHED")
        print(f"scaling sweep finished in {wall / 60:.1f} min: {len(self.member_runs)} members,"
              f" fit in {Path(self.out_dir) / 'fit'}, MLflow run {self.mlflow_run_id}")


if __name__ == "__main__":
    os.environ.setdefault("USERNAME", "pac")
    from pac.scaling.sweep import check_sweep_argv

    problem = check_sweep_argv(sys.argv[1:], DEFAULT_PARAMS)
    if problem:
        print(f"pac: invalid params: {problem}", file=sys.stderr)
        sys.exit(2)
    ScalingFlow()
