"""The scaling sweep (§4.1, App. E.1): members family x size x seed, their configs, the fit.

`flows/scaling_flow.py` calls these functions one per step; nothing here knows Metaflow.

* :func:`members` turns a params file with a ``scaling:`` section (``params/presets/
  scaling_laptop.yaml``, ``scaling_paper.yaml``) and the flow's ``--set`` overrides into the
  sweep's members. A member's settings are, in this order: the params file, its size's ``set``,
  the ``--set`` overrides (they apply to every member), its family's loss settings
  (:data:`pac.config.FAMILIES`: PAC = ``loss.variant=pac``, α 0.75; BC+Q = ``bc_q``, α 1), its
  seed (``train.seed``), ``train.eval_every = train.steps // scaling.evaluations`` (App. E.1:
  about six evaluations a run, the last update always among them) and its own
  ``train.out_dir = <scaling.out_dir>/<flow run>/<member>``. Every member's config is validated
  before any compute.
* :func:`train_member` is the main flow's pretraining (:func:`pac.pipeline.pretrain`: the
  folder claimed for the flow run, ``train(resume=True)``) under the member's own MLflow run
  name, so a retried or resumed member continues from its own newest checkpoint.
* :func:`fit_sweep` reads the members' ``eval_points.csv`` and fits §4.1 with
  :mod:`pac.scaling.laws` (profiles, envelope, eq. 4 per family, iso-return data, figures);
  the fit goes to the sweep's MLflow parent run (:func:`pac.scaling.laws.log_fit`).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pac.config import FAMILIES, SWEEP_KEYS, ConfigError, PACConfig, load_config
from pac.scaling.laws import observed_window  # noqa: F401  (the sweep's window, re-exported)

#: The points of every member as the fit read them (in the fit's output folder).
POINTS_FILE = "points.csv"
#: Placeholder flow run of a validation before the flow run exists.
CHECK_RUN = "check"


@dataclass
class Member:
    """One training run of the sweep."""

    name: str  # "<family>-<size>-seed<seed>": its train.out_dir's name and its MLflow run
    family: str
    size: str
    seed: int
    overrides: list[str]  # over the params file, in order
    params: int  # parameter count N of its model
    steps: int
    eval_every: int
    flops_per_update: float
    tokens_per_update: int

    def config(self, params_file: str | Path) -> PACConfig:
        return load_config(params_file, self.overrides)


def _override(key: str, value: Any) -> str:
    """KEY=VALUE with the value written as JSON (which YAML reads back unchanged)."""
    return f"{key}={json.dumps(value)}"


def members(params_file: str | Path, overrides: list[str], flow_run: str = CHECK_RUN
            ) -> list[Member]:
    """The sweep's members (family-major, then size, then seed), each config validated.

    Raises ConfigError naming the member and the key on a bad setting."""
    from pac.model.info import model_info
    from pac.train.plan import training_flops_per_update, training_tokens_per_update

    for text in overrides:
        key = text.split("=", 1)[0].strip()
        if key in SWEEP_KEYS:
            raise ConfigError(f"--set {key}: the sweep sets it per member (scaling.families,"
                              " scaling.seeds, scaling.out_dir)")
    sweep = load_config(params_file, overrides)
    s = sweep.scaling
    out: list[Member] = []
    for family in s.families:
        for size in s.sizes:
            for seed in s.seeds:
                name = f"{family}-{size.name}-seed{seed}"
                base = [_override(k, v) for k, v in size.set.items()] + list(overrides)
                base += [_override(k, v) for k, v in FAMILIES[family].items()]
                base.append(f"train.seed={seed}")
                try:
                    steps = load_config(params_file, base).train.steps
                    every = max(1, steps // s.evaluations)
                    final = [*base, f"train.eval_every={every}",
                             f"train.out_dir={Path(s.out_dir) / flow_run / name}"]
                    cfg = load_config(params_file, final)
                except ConfigError as exc:
                    raise ConfigError(f"scaling member {name}: {exc}") from None
                out.append(Member(name, family, size.name, seed, final,
                                  model_info(cfg.model)["params"], steps, every,
                                  training_flops_per_update(cfg),
                                  training_tokens_per_update(cfg)))
    return out


def check_members(params_file: str | Path, overrides: list[str]) -> None:
    """Validate every member (for :func:`pac.pipeline.check_flow_argv`)."""
    members(params_file, overrides)


def check_sweep_argv(argv: list[str], default_params: str | Path) -> str | None:
    """The one-line problem with a scaling flow `run` command line, or None: the params and
    every member (:func:`pac.pipeline.check_flow_argv`), then --window and --bootstrap."""
    import argparse

    from pac.pipeline import check_flow_argv

    problem = check_flow_argv(argv, default_params, check_members)
    if problem or "run" not in argv:
        return problem
    parser = argparse.ArgumentParser(add_help=False, exit_on_error=False)
    parser.add_argument("--window", default="steps")
    parser.add_argument("--bootstrap", default="0")
    try:
        args, _ = parser.parse_known_args(argv[argv.index("run") + 1:])
    except argparse.ArgumentError as exc:
        return str(exc)
    if args.window not in WINDOWS:
        return f"--window {args.window!r} is not one of {', '.join(WINDOWS)}"
    if not args.bootstrap.isdigit():
        return f"--bootstrap {args.bootstrap!r} is not an integer >= 0"
    return None


def ladder_table(items: list[Member]) -> str:
    """The members as a Markdown table: model size, cost, schedule."""
    lines = ["| member | family | size | seed | parameters | updates | eval every |"
             " FLOPs/update | FLOPs total | tokens total |",
             "|---|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for m in items:
        lines.append(f"| {m.name} | {m.family} | {m.size} | {m.seed} | {m.params:,} |"
                     f" {m.steps:,} | {m.eval_every:,} | {m.flops_per_update:.3g} |"
                     f" {m.steps * m.flops_per_update:.3g} |"
                     f" {m.steps * m.tokens_per_update:.3g} |")
    return "\n".join(lines)


def train_member(params_file: str | Path, member: dict[str, Any], flow_run: str,
                 parent_run_id: str | None):
    """Train one member: :func:`pac.pipeline.pretrain` under the MLflow run name of the
    member, tagged with its family, size and seed. Returns the TrainResult."""
    from pac.pipeline import pretrain
    from pac.tracking import Tracker

    m = Member(**member)
    cfg = m.config(params_file)
    result = pretrain(cfg, flow_run, parent_run_id, run_name=m.name)
    if result.run_id:
        Tracker.existing(cfg, result.run_id).set_tags({
            "pac.stage": "scaling-member", "pac.scaling.family": m.family,
            "pac.scaling.size": m.size, "pac.scaling.seed": m.seed,
            "pac.scaling.params": m.params})
    return result


def member_points(out_dir: str | Path) -> list[dict[str, str]]:
    """The eval_points.csv rows of a member's train.out_dir; a clear error when missing."""
    from pac.train.periodic_eval import POINTS_FILE as MEMBER_POINTS
    from pac.train.periodic_eval import read_points

    path = Path(out_dir) / MEMBER_POINTS
    if not path.is_file():
        raise ConfigError(f"{path}: no evaluation points (train.eval_every was 0?)")
    return read_points(path)


@dataclass
class SweepFit:
    """What :func:`fit_sweep` produced: the fit's numbers, files and what it left out."""

    values: dict[str, float | None]  # pac.scaling.laws.fit_params: a, b, N0, D0, intervals
    summary: dict[str, Any]  # ScalingResult.summary()
    written: list[str]
    dropped: dict[str, str]  # run -> why its return profile could not be fitted
    error: str | None = None  # the whole fit failed (e.g. one size left in a family)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


#: FLOP windows of the envelope: "steps" (pac.scaling.laws.step_window: from the first to the
#: last change of selected size, within the budgets where two runs overlap) or "observed" (from
#: the first to the last evaluation of any run of the family).
WINDOWS = ("steps", "observed")


def fit_sweep(cfg: PACConfig, rows: list[dict[str, Any]], out_dir: str | Path,
              parent_run_id: str | None = None, draws: int | None = None,
              window: str = "steps") -> SweepFit:
    """Fit §4.1 to the sweep's points and log it to the parent run.

    `window` is one of :data:`WINDOWS` (the envelope's FLOP window, per family).

    Writes ``points.csv`` (every member's rows, the fit's input) and, when the fit succeeds,
    ``write_outputs``' tables and figures to `out_dir`; logs all of them under ``scaling/`` and
    the fit's values as params and metrics of `parent_run_id` (:func:`log_fit`).

    A run whose return profile (eq. 18) cannot be fitted (flat returns, no convergence) is left
    out with its reason; the fit fails only when a family is left with fewer than two sizes or
    its envelope selects one size: then ``error`` says why, the points are still written and
    logged, and the parent run gets the tag ``pac.scaling_error``.
    """
    from pac.scaling.laws import (
        BOOTSTRAP_DRAWS,
        ScalingInputError,
        fit_params,
        fit_profile,
        fit_profiles,
        log_fit,
        runs_from_rows,
        write_outputs,
    )
    from pac.train.periodic_eval import COLUMNS, write_points

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    points = out_dir / POINTS_FILE
    write_points(points, [{k: r.get(k, "") for k in COLUMNS} for r in rows])  # as read
    tracker = None
    if parent_run_id:
        from pac.tracking import Tracker

        tracker = Tracker.existing(cfg, parent_run_id)
        tracker.log_artifact(points, "scaling")
    dropped: dict[str, str] = {}
    try:
        runs = runs_from_rows(rows, "sweep points")
        kept = []
        for run in runs:
            try:
                kept.append(fit_profile(run))
            except ScalingInputError as exc:
                dropped[run.name] = str(exc)
        if not kept:
            raise ScalingInputError("no member's return profile (eq. 18) could be fitted")
        draws = BOOTSTRAP_DRAWS if draws is None else draws
        result = fit_profiles(kept, draws=draws, window="observed" if window == "observed"
                              else None)
    except ScalingInputError as exc:
        error = str(exc)
        if dropped:
            error += "; left out: " + "; ".join(f"{k}: {v}" for k, v in dropped.items())
        if tracker is not None:
            tracker.set_tags({"pac.scaling_error": error})
        return SweepFit({}, {}, [str(points)], dropped, error)
    written = [str(points)] + [str(p) for p in write_outputs(result, out_dir, figures=True)]
    if tracker is not None:
        log_fit(tracker, result, out_dir)
        if dropped:
            tracker.set_tags({"pac.scaling_dropped": json.dumps(dropped)})
    return SweepFit(fit_params(result), result.summary(), written, dropped)


def fit_markdown(fit: SweepFit) -> str:
    """The fit per family as Markdown: a (N_opt = N_0 C^a) and b (D_opt = D_0 C^b) with their
    OLS and bootstrap 95% intervals, the step-edge estimate and the fit's notes."""
    if fit.error:
        return f"**No scaling fit**: {fit.error}"
    lines = ["| family | runs | a [OLS 95%] | a bootstrap 95% | a step edges | N_0 |"
             " b [OLS 95%] | b bootstrap 95% | D_0 |", "|---|---:|---|---|---|---|---|---|---|"]
    for name, fam in fit.summary["families"].items():
        n, d, x = fam["n_opt"], fam["d_opt"], fam["n_opt_crossings"]

        def law(p: dict[str, Any] | None) -> str:
            return "-" if not p else (f"{p['exponent']:.3f} [{p['ci95'][0]:.3f},"
                                      f" {p['ci95'][1]:.3f}]")

        def boot(p: dict[str, Any] | None) -> str:
            ci = (p or {}).get("bootstrap_ci95")
            return "-" if not ci else f"[{ci[0]:.3f}, {ci[1]:.3f}]"

        lines.append(f"| {name} | {fam['runs']} | {law(n)} | {boot(n)} | {law(x)} |"
                     f" {fam['N0']:.3g} | {law(d)} | {boot(d)} |"
                     f" {'-' if fam['D0'] is None else format(fam['D0'], '.3g')} |")
    for name, fam in fit.summary["families"].items():
        lines += [f"- {name}: {note}" for note in fam["notes"]]
    lines += [f"- left out {run}: {why}" for run, why in fit.dropped.items()]
    return "\n".join(lines)


def sweep_description(exp_id: str, fit_table: str, ladder: str, member_runs: dict[str, str],
                      wall_clock_s: float) -> str:
    """The parent run's description: the fit, the members and links to their runs."""
    from pac.pipeline import _run_link

    return "\n".join([
        "## Scaling sweep (§4.1): N_opt = N_0 C^a, D_opt = D_0 C^b per family", "",
        fit_table, "",
        f"Wall clock {wall_clock_s / 60:.1f} min. Figures: `scaling/profiles.png` (return"
        " profiles and envelope against FLOPs), `scaling/scaling.png` (eq. 4 fits, Figure 3),"
        " `scaling/isoreturn.png` (iso-return contours of the families overlaid, Figure 4);"
        " the fit's input: `scaling/points.csv`.", "",
        "### Members", "", ladder, "",
        " · ".join(_run_link(exp_id, rid, name) for name, rid in member_runs.items()), "",
    ])
