"""Scaling-law fits (§4.1, App. E.1) recover known parameters from synthetic, seeded data."""

import csv
import json
import math

import numpy as np
import pytest

from pac.cli import main
from pac.scaling.laws import (
    Run,
    ScalingInputError,
    fit_profile,
    fit_scaling,
    load_points,
    overlap_window,
    rows_from_runs,
    synthetic_ladder,
)

# The paper's exponents (§4.1): a(PAC) = 0.920, b = 0.266.
A_TRUE, B_TRUE = 0.92, 0.266


def _eq18(n, a, k, n0, b):
    """Eq. 18 written out here, independently of pac.scaling.laws.logistic."""
    return a / (1.0 + np.exp(-k * (np.asarray(n, float) - n0))) + b


def _write_csv(path, rows):
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return path


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_logistic_profile_recovers_eq18_parameters(seed):
    """12 noisy evaluations (sd 0.01) of a known eq. 18: every parameter within 3 standard
    errors of the truth, and the errors small enough to mean something."""
    true = dict(a=0.6, k=3e-6, n0=1.2e6, b=0.1)
    steps = np.linspace(2.5e5, 3e6, 12)
    rng = np.random.default_rng(seed)
    ret = _eq18(steps, **true) + rng.normal(0, 0.01, steps.size)
    prof = fit_profile(Run("r", "pac", 1e6, 1e12, None, steps, ret))
    for (name, value), est, se in zip(true.items(), prof.params, prof.stderr):
        assert abs(est - value) < 3 * se, (name, est, value, se)
        assert se < 0.25 * abs(value), (name, se)
    assert prof.rmse < 0.02


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fit_recovers_power_law_exponents(seed):
    """The §4.1 pipeline (profiles -> envelope -> eq. 4) gives back a and b within +-0.02."""
    runs, window = synthetic_ladder(seed=seed)
    result = fit_scaling(runs, draws=20, seed=seed, window=window)
    fam = result.families["pac"]
    assert fam.n_opt.exponent == pytest.approx(A_TRUE, abs=0.02)
    assert fam.d_opt.exponent == pytest.approx(B_TRUE, abs=0.02)
    lo, hi = fam.n_opt.ci
    assert lo < A_TRUE < hi and hi - lo < 0.1
    assert len(fam.envelope.flops) == 100
    assert len(set(fam.envelope.runs)) >= 9  # the staircase really walks up the ladder
    # N_0: the truth at mid-window is the geometric mean of the two sizes at the step edge,
    # N*(C) = 1e6 / sqrt(ratio) (C / (x 1e18))^a with x from the window's first edge
    c = float(np.sqrt(window[0] * window[1]))
    x = window[0] / 1.0001 / (1e18 * 1.35 ** (1 / A_TRUE))
    n_true = 1e6 / math.sqrt(1.35) * (c / (x * 1e18)) ** A_TRUE
    assert fam.n_opt(c) == pytest.approx(n_true, rel=0.1)
    assert fam.n_opt_crossings(c) == pytest.approx(n_true, rel=0.1)
    # compute-optimal size at a budget: the line itself, and via the data budget's C
    assert fam.optimal_params(flops=c) == pytest.approx(
        10 ** fam.n_opt.log10_coef * c**fam.n_opt.exponent)
    d = float(fam.d_opt(c))
    assert fam.optimal_params(tokens=d) == pytest.approx(fam.optimal_params(flops=c), rel=1e-9)


def test_two_families_are_fitted_separately():
    """PAC-like (a = 0.92) and BC+Q-like (a = 0.828) ladders in one file keep their exponents."""
    pac, window = synthetic_ladder(seed=0, family="pac")
    bcq, window_bcq = synthetic_ladder(a=0.828, seed=1, family="bc_q")
    result = fit_scaling(pac + bcq, draws=0, window=(window[0], window_bcq[1]))
    assert set(result.families) == {"bc_q", "pac"}
    assert result.families["bc_q"].n_opt.exponent < result.families["pac"].n_opt.exponent
    assert {r["family"] for r in result.contours} == {"bc_q", "pac"}


def test_cli_fit_writes_tables_and_figures(tmp_path, capsys):
    runs, window = synthetic_ladder(seed=0)
    points = _write_csv(tmp_path / "points.csv", rows_from_runs(runs))
    out = tmp_path / "fit"
    code = main(["scaling", "fit", str(points), "--out", str(out), "--bootstrap", "10",
                 "--flops-min", repr(window[0]), "--flops-max", repr(window[1]),
                 "--flops-budget", "1e21"])
    assert code == 0
    summary = json.loads((out / "fit.json").read_text())
    assert summary["families"]["pac"]["a"] == pytest.approx(A_TRUE, abs=0.02)
    assert summary["families"]["pac"]["b"] == pytest.approx(B_TRUE, abs=0.02)
    for name in ("profiles.png", "scaling.png", "isoreturn.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with open(out / "envelope.csv") as fh:
        env = list(csv.DictReader(fh))
    assert len(env) == 100 and float(env[0]["flops"]) == pytest.approx(window[0])
    with open(out / "profiles.csv") as fh:
        assert len(list(csv.DictReader(fh))) == len(runs)
    assert "N_opt at C=1e+21" in capsys.readouterr().out
    assert not list(out.glob(".*.tmp"))  # atomic writes leave no temp files


def test_json_runs_format_and_csv_agree(tmp_path):
    runs, _ = synthetic_ladder(sizes=3, ratio=2.0, seed=0)
    doc = {"runs": [{"run": r.name, "family": r.family, "params": r.params,
                     "flops_per_update": r.flops_per_update,
                     "points": [{"step": s, "return": v} for s, v in zip(r.steps, r.returns)]}
                    for r in runs]}
    (tmp_path / "p.json").write_text(json.dumps(doc))
    from_json = load_points(tmp_path / "p.json")
    from_csv = load_points(_write_csv(tmp_path / "p.csv", rows_from_runs(runs)))
    for a, b in zip(from_json, from_csv):
        assert a.name == b.name and a.params == b.params
        assert a.flops_per_update == pytest.approx(b.flops_per_update)
        np.testing.assert_allclose(a.steps, b.steps)
        np.testing.assert_allclose(a.returns, b.returns)
    assert from_json[0].tokens_per_update is None  # no tokens given: no D_opt fit
    assert from_csv[0].tokens_per_update == pytest.approx(2560 * 354.0)


def _run(n_points=8, returns=None, name="r"):
    steps = np.linspace(1e5, 1e6, n_points)
    rets = _eq18(steps, 0.5, 8e-6, 5e5, 0.1) if returns is None else returns
    return Run(name, "pac", 1e6, 1e12, None, steps, np.asarray(rets, float))


@pytest.mark.parametrize(
    ("run", "message"),
    [(_run(n_points=4), "4 evaluation points"),
     (_run(returns=[0.3] * 8), "returns are flat"),
     (_run(returns=[0.4, 0.40001] * 4), "returns are flat")],
)
def test_degenerate_profiles_are_refused(run, message):
    with pytest.raises(ScalingInputError, match=message):
        fit_profile(run)


def test_a_single_model_size_cannot_give_a_power_law():
    runs = [_run(name="a"), _run(name="b")]  # two seeds of one size
    with pytest.raises(ScalingInputError, match="at least two sizes"):
        fit_scaling(runs, draws=0)


@pytest.mark.parametrize(
    ("row", "message"),
    [({"return": 1.7}, "outside \\[0, 1\\]"),
     ({"params": -5}, "must be > 0"),
     ({"return": "nan"}, "not finite"),
     ({"return": "high"}, "not a number"),
     ({"flops": ""}, "needs flops or flops_per_update")],
)
def test_bad_rows_are_refused_with_the_row_named(tmp_path, row, message):
    runs, _ = synthetic_ladder(sizes=2, ratio=2.0)
    rows = rows_from_runs(runs)
    rows[3] = rows[3] | row
    path = _write_csv(tmp_path / "bad.csv", rows)
    with pytest.raises(ScalingInputError, match=message) as err:
        load_points(path)
    assert "row 4" in str(err.value)


def test_inconsistent_run_and_missing_columns(tmp_path):
    runs, _ = synthetic_ladder(sizes=2, ratio=2.0)
    rows = rows_from_runs(runs)
    rows[1]["params"] = rows[1]["params"] * 2
    with pytest.raises(ScalingInputError, match="params differs"):
        load_points(_write_csv(tmp_path / "a.csv", rows))
    with pytest.raises(ScalingInputError, match="missing column"):
        load_points(_write_csv(tmp_path / "b.csv", [{"run": "x", "step": 1}]))
    (tmp_path / "c.json").write_text("{not json")
    with pytest.raises(ScalingInputError, match="not valid JSON"):
        load_points(tmp_path / "c.json")


def test_cli_refuses_bad_input_and_writes_nothing(tmp_path, capsys):
    path = _write_csv(tmp_path / "few.csv", rows_from_runs([_run(n_points=3)]))
    out = tmp_path / "out"
    assert main(["scaling", "fit", str(path), "--out", str(out)]) == 2
    assert "needs at least 5" in capsys.readouterr().err
    assert not out.exists()
    assert main(["scaling", "fit", str(path), "--flops-min", "1e18"]) == 2


def test_cli_flops_prints_table17rows_from_runs(capsys):
    assert main(["scaling", "flops"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines[1:]] == ["XXS", "XS", "S", "M", "L"]
    assert math.isclose(float(lines[-1].split()[-1]), 0.697, abs_tol=0.002)


@pytest.mark.parametrize("seed", [0, 1])
def test_step_edges_do_not_depend_on_the_window(seed):
    """With the overlap FLOP window the staircase's cut first and last steps drag the 100-point
    fit far below a; the line through the envelope's step edges stays within 0.02, and the
    default window (first to last step edge) brings the 100-point fit back within 0.02."""
    runs, _ = synthetic_ladder(seed=seed)
    fam = fit_scaling(runs, draws=0, window=overlap_window(runs)).families["pac"]
    assert fam.n_opt.exponent < A_TRUE - 0.1
    assert fam.n_opt_crossings.exponent == pytest.approx(A_TRUE, abs=0.02)
    assert fam.d_opt_crossings.exponent == pytest.approx(B_TRUE, abs=0.02)
    assert fam.n_opt_crossings.n_points >= 8
    default = fit_scaling(runs, draws=0).families["pac"]
    assert default.n_opt.exponent == pytest.approx(A_TRUE, abs=0.02)
    assert default.d_opt.exponent == pytest.approx(B_TRUE, abs=0.02)


def test_cli_fit_tracks_the_fit_in_a_real_mlflow_store(tmp_path, capsys):
    """--track: one MLflow run (sqlite store) with a, b, N0, D0 and intervals as params and
    metrics, and the written tables as artefacts."""
    from pac.config import load_config
    from pac.tracking import get_run, list_artifacts

    runs, window = synthetic_ladder(seed=0)
    points = _write_csv(tmp_path / "points.csv", rows_from_runs(runs))
    store = [f"tracking.uri=sqlite:///{tmp_path}/mlruns/mlflow.db",
             f"tracking.artifact_dir={tmp_path}/mlruns/artifacts", "tracking.experiment=scaling"]
    args = ["scaling", "fit", str(points), "--out", str(tmp_path / "fit"), "--no-figures",
            "--bootstrap", "0", "--track"]
    for item in store:
        args += ["--set", item]
    assert main(args) == 0
    run_id = capsys.readouterr().out.split("mlflow run: ")[1].split()[0]
    run = get_run(load_config(overrides=store), run_id)
    summary = json.loads((tmp_path / "fit" / "fit.json").read_text())["families"]["pac"]
    assert run["status"] == "FINISHED"
    assert float(run["params"]["pac.a"]) == pytest.approx(summary["a"])
    assert run["metrics"]["pac.b"] == pytest.approx(summary["b"])
    assert run["metrics"]["pac.a_ci95_low"] < run["metrics"]["pac.a"]
    assert "pac.N0" in run["params"] and "pac.D0" in run["params"]
    files = list_artifacts(load_config(overrides=store), run_id, "scaling")
    assert {"scaling/fit.json", "scaling/envelope.csv"} <= set(files)
