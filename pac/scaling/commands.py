"""`pac scaling`: scaling laws for offline RL (§4.1, App. E).

    pac scaling fit points.csv --out runs/scaling     # profiles, envelope, eq. 4, figures
    pac scaling fit points.json --flops-min 5e18 --flops-max 5e20 --flops-budget 1e21
    pac scaling flops                                  # the App. E.2 count against Table 17
    pac scaling synth points.csv                       # a ladder with known a and b, to try fit
    pac scaling ladder --params params/presets/scaling_laptop.yaml   # the sweep's members
"""

from __future__ import annotations

import argparse
import json
import sys

from pac.cli_args import add_config_args, config_from_args


def _cmd_fit(args: argparse.Namespace) -> int:
    from pac.scaling.laws import ScalingInputError, fit_scaling, load_points, write_outputs

    window = None
    if (args.flops_min is None) != (args.flops_max is None):
        print("pac scaling fit: give both --flops-min and --flops-max, or neither",
              file=sys.stderr)
        return 2
    if args.flops_min is not None:
        window = (args.flops_min, args.flops_max)
    if args.points < 3 or args.bootstrap < 0:
        print("pac scaling fit: --points must be >= 3 and --bootstrap >= 0", file=sys.stderr)
        return 2
    try:
        runs = load_points(args.input)
        result = fit_scaling(runs, num=args.points, draws=args.bootstrap, seed=args.seed,
                             window=window)
        budgets = {}
        for name, fam in result.families.items():
            if args.flops_budget:
                budgets[f"{name}: N_opt at C={args.flops_budget:g}"] = fam.optimal_params(
                    flops=args.flops_budget)
            if args.data_budget:
                budgets[f"{name}: N_opt at D={args.data_budget:g}"] = fam.optimal_params(
                    tokens=args.data_budget)
    except ScalingInputError as exc:
        print(f"pac scaling fit: {exc}", file=sys.stderr)
        return 2
    summary = result.summary()
    summary["budgets"] = budgets
    if args.out:
        written = write_outputs(result, args.out, figures=not args.no_figures)
        summary["written"] = [str(p) for p in written]
    if args.track:
        from pac.scaling.laws import log_fit
        from pac.tracking import Tracker

        tracker = Tracker(config_from_args(args), "scaling-fit", parent_run_id=args.parent_run,
                          tags={"pac.stage": "scaling"})
        log_fit(tracker, result, args.out)
        tracker.finish()
        summary["mlflow_run"] = tracker.run_id
    if args.json:
        print(json.dumps(summary, indent=1, default=float))
        return 0
    print(f"{len(result.profiles)} return profiles (eq. 18):")
    for row in summary["profiles"]:
        print(f"  {row['run']:<24} {row['family']:<8} N={row['params']:.3g}  a={row['a']:.3f}"
              f"±{row['a_se']:.3f} k={row['k']:.3g} n0={row['n0']:.3g}±{row['n0_se']:.2g}"
              f" b={row['b']:.3f}±{row['b_se']:.3f} rmse={row['rmse']:.3f}")
    for name, fam in summary["families"].items():
        n, d = fam["n_opt"], fam["d_opt"]
        lo, hi = fam["envelope_flops_range"]
        print(f"{name}: {fam['envelope_points']} envelope points in [{lo:.3g}, {hi:.3g}] FLOPs")
        print(f"  N_opt = {n['coef']:.3g} C^a, a = {n['exponent']:.3f}"
              f" (OLS 95% [{n['ci95'][0]:.3f}, {n['ci95'][1]:.3f}]"
              + (f", bootstrap [{n['bootstrap_ci95'][0]:.3f}, {n['bootstrap_ci95'][1]:.3f}])"
                 if n["bootstrap_ci95"] else ")"))
        if d:
            print(f"  D_opt = {d['coef']:.3g} C^b, b = {d['exponent']:.3f}"
                  f" (OLS 95% [{d['ci95'][0]:.3f}, {d['ci95'][1]:.3f}]"
                  + (f", bootstrap [{d['bootstrap_ci95'][0]:.3f}, {d['bootstrap_ci95'][1]:.3f}])"
                     if d["bootstrap_ci95"] else ")"))
        for key, sym in (("n_opt_crossings", "a"), ("d_opt_crossings", "b")):
            if fam[key]:
                x = fam[key]
                print(f"  {sym} through the {x['n_points']} step edges of the envelope:"
                      f" {x['exponent']:.3f} (OLS 95% [{x['ci95'][0]:.3f}, {x['ci95'][1]:.3f}])")
        for note in fam["notes"]:
            print(f"  note: {note}")
    for label, value in budgets.items():
        print(f"{label}: {value:.4g} parameters")
    if args.out:
        print(f"written to {args.out}: " + ", ".join(p.split("/")[-1] for p in summary["written"]))
    if args.track:
        print(f"mlflow run: {summary['mlflow_run']}")
    return 0


def _cmd_flops(args: argparse.Namespace) -> int:
    from pac.config import REPO_ROOT
    from pac.train.plan import TABLE_17, update_flops

    params = args.params or str(REPO_ROOT / "params" / "presets" / "L.yaml")  # Table 5 inputs

    print(f"{'scale':<6} {'FWD':>10} {'BWD':>10} {'UPDATE':>10}   {'Table 17 FWD':>12}"
          f" {'UPDATE':>10} {'count/paper':>11}")
    for scale, (fwd, _, upd) in TABLE_17.items():
        ns = argparse.Namespace(params=params,
                                overrides=[*args.overrides, f"model.scale={scale}"])
        f = update_flops(config_from_args(ns).model, args.batch, args.target_period)
        print(f"{scale:<6} {f['FWD']:>10.4g} {f['BWD']:>10.4g} {f['UPDATE']:>10.4g}"
              f"   {fwd:>12.4g} {upd * args.batch / 512:>10.4g} {f['FWD'] / fwd:>11.3f}")
    return 0


def _cmd_synth(args: argparse.Namespace) -> int:
    import csv
    import io

    from pac.io import atomic_write_text
    from pac.scaling.laws import rows_from_runs, synthetic_ladder

    runs, window = [], None
    for i, (family, a) in enumerate(zip(args.family, args.a)):
        fam_runs, window = synthetic_ladder(a=a, b=args.b, sizes=args.sizes, ratio=args.ratio,
                                            seed=args.seed + i, noise=args.noise,
                                            family=family)
        runs += fam_runs
    rows = rows_from_runs(runs)

    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(args.output, text.getvalue())
    print(f"{len(rows)} evaluation points of {len(runs)} runs in {args.output}; a step-aligned"
          f" window of the last family: --flops-min {window[0]:.6g} --flops-max {window[1]:.6g}")
    return 0


def _cmd_ladder(args: argparse.Namespace) -> int:
    from pac.config import DEFAULT_PARAMS, ConfigError
    from pac.scaling.sweep import ladder_table, members

    try:
        items = members(args.params or DEFAULT_PARAMS, args.overrides)
    except ConfigError as exc:
        print(f"pac scaling ladder: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps([m.__dict__ for m in items], indent=1))
    else:
        print(ladder_table(items))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "scaling",
        help="scaling laws (§4.1): return profiles, envelope, N_opt/D_opt power laws, FLOPs",
        description="Scaling laws for offline RL (§4.1, App. E): `fit` reads evaluation points"
        " and fits eq. 18 per run, the envelope over FLOPs and eq. 4 per family; `flops`"
        " prints the App. E.2 FLOP count per scale next to Table 17.",
    )
    cmds = p.add_subparsers(dest="scaling_command", metavar="SUBCOMMAND", required=True)

    f = cmds.add_parser(
        "fit",
        help="fit return profiles, envelope and power laws from evaluation points",
        description="INPUT: CSV or JSON, one row per evaluation: run, params, step, return"
        " (normalised to [0, 1]), flops or flops_per_update; optional family, tokens or"
        " tokens_per_update. Writes fit.json, profiles.csv, envelope.csv, contours.csv,"
        " profiles.png, scaling.png and isoreturn.png to --out.",
    )
    f.add_argument("input", help="evaluation points (.csv or .json)")
    f.add_argument("--out", default=None, metavar="DIR", help="folder for tables and figures")
    f.add_argument("--points", type=int, default=100,
                   help="log-spaced FLOP budgets on the envelope (default 100, as in §4.1)")
    f.add_argument("--flops-min", type=float, default=None,
                   help="lower end of the envelope's FLOP window (default: the envelope's first"
                   " change of selected size)")
    f.add_argument("--flops-max", type=float, default=None,
                   help="upper end of the window (default: the last change of size)")
    f.add_argument("--bootstrap", type=int, default=200,
                   help="parametric bootstrap draws for the exponents' intervals (0: none)")
    f.add_argument("--seed", type=int, default=0, help="seed of the bootstrap")
    f.add_argument("--flops-budget", type=float, default=None,
                   help="also print N_opt for this FLOP budget")
    f.add_argument("--data-budget", type=float, default=None,
                   help="also print N_opt for this data budget in tokens (via D_opt)")
    f.add_argument("--no-figures", action="store_true", help="tables only, no PNGs")
    f.add_argument("--json", action="store_true", help="print the summary as JSON")
    f.add_argument("--track", action="store_true",
                   help="log the fit (params, metrics, --out files) as an MLflow run of the"
                   " params file's tracking store")
    f.add_argument("--parent-run", default=None, help="with --track: nest under this run")
    add_config_args(f)
    f.set_defaults(func=_cmd_fit)

    fl = cmds.add_parser(
        "flops",
        help="FLOPs per forward/backward/update per scale (App. E.2) against Table 17",
        description="Forward, backward and update FLOPs for XXS..L with the model settings of"
        " --params (default params/presets/L.yaml: Table 5's input format) and model.scale"
        " set per row.",
    )
    add_config_args(fl)
    fl.add_argument("--batch", type=int, default=512, help="B of FLOPS_UPDATE (Table 17: 512)")
    fl.add_argument("--target-period", type=int, default=100,
                    help="f_theta' of FLOPS_BWD (Table 17: 100)")
    fl.set_defaults(func=_cmd_flops)

    sy = cmds.add_parser(
        "synth",
        help="write evaluation points of a synthetic ladder with known exponents (CSV)",
        description="Runs whose compute-optimal size follows N_0 C^a and D_0 C^b exactly"
        " (pac.scaling.laws.synthetic_ladder): eq. 18 profiles with seeded noise, one ladder per"
        " --family/--a pair, for trying `pac scaling fit`.",
    )
    sy.add_argument("output", help="CSV file to write")
    sy.add_argument("--family", nargs="+", default=["pac", "bc_q"], help="family names")
    sy.add_argument("--a", nargs="+", type=float, default=[0.92, 0.828],
                    help="N_opt exponent per family (default: the paper's PAC and BC+Q)")
    sy.add_argument("--b", type=float, default=0.266, help="D_opt exponent")
    sy.add_argument("--sizes", type=int, default=12, help="model sizes per family")
    sy.add_argument("--ratio", type=float, default=1.35, help="size ratio between neighbours")
    sy.add_argument("--noise", type=float, default=0.005, help="sd of the return noise")
    sy.add_argument("--seed", type=int, default=0)
    sy.set_defaults(func=_cmd_synth)

    la = cmds.add_parser(
        "ladder",
        help="the scaling sweep's members (family x size x seed) with their parameter counts",
        description="The members flows/scaling_flow.py trains for --params (a params file with a"
        " scaling: section, e.g. params/presets/scaling_laptop.yaml) and --set: parameter count"
        " (pac.model.info), updates, evaluation period, FLOPs and tokens. Every member's config"
        " is validated.",
    )
    add_config_args(la)
    la.add_argument("--json", action="store_true", help="print the members as JSON")
    la.set_defaults(func=_cmd_ladder)
