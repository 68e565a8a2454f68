"""The scaling sweep's members and fit (pac.scaling.sweep), without Metaflow: fast checks."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pac.config import REPO_ROOT, SCALES, ConfigError, load_config

PRESETS = REPO_ROOT / "params" / "presets"
LAPTOP = PRESETS / "scaling_laptop.yaml"


def _real_count(cfg) -> int:
    """Parameters of the model actually built (not the meta-device count of pac.model.info)."""
    from pac.model import PerceiverActorCritic

    return sum(p.numel() for p in PerceiverActorCritic(cfg.model).parameters())


def test_laptop_ladder_members_and_their_settings():
    from pac.scaling.sweep import members

    got = members(LAPTOP, [], flow_run="123")
    assert [m.name for m in got] == [f"{f}-s{i}-seed0" for f in ("pac", "bc_q")
                                     for i in range(1, 6)]
    counts = []
    for m in got:
        cfg = m.config(LAPTOP)
        assert cfg.loss.variant == m.family
        assert cfg.loss.alpha == {"pac": 0.75, "bc_q": 1.0}[m.family]
        assert cfg.train.seed == 0 and cfg.train.steps == 480
        # six evaluations evenly spaced over the run, the last at the last update (App. E.1)
        evaluated = [n for n in range(1, 481) if n % cfg.train.eval_every == 0 or n == 480]
        assert evaluated == [80, 160, 240, 320, 400, 480]
        assert cfg.train.out_dir == f"runs/scaling/123/{m.name}"
        assert m.params == _real_count(cfg)
        counts.append(m.params)
    assert counts[:5] == counts[5:]  # the same ladder for both families
    assert counts[:5] == [92_058, 147_338, 299_370, 606_282, 1_903_050]  # the preset's notes
    assert counts[1] == _real_count(load_config())  # s2 is the tiny scale


def test_paper_ladder_is_table_4():
    from pac.scaling.sweep import members

    got = members(PRESETS / "scaling_paper.yaml", [])
    pac = [m for m in got if m.family == "pac"]
    assert [m.size for m in pac] == ["XXS", "XS", "S", "M", "L"]
    for m in pac:
        cfg = m.config(PRESETS / "scaling_paper.yaml")
        assert cfg.model.d_z == SCALES[m.size]["d_z"]
        assert m.params == pytest.approx(SCALES[m.size]["paper_params"], rel=0.05)
        assert cfg.train.steps == 3_000_000 and cfg.train.eval_every == 500_000
        assert cfg.train.eval_episodes == 100  # App. E.1: 100 trials a task
        # each scale with its own Table 12 learning rate (its params/presets/<scale>.yaml)
        own = load_config(PRESETS / f"{m.size}.yaml")
        assert (cfg.train.lr_init, cfg.train.lr_peak, cfg.train.lr_end) == (
            own.train.lr_init, own.train.lr_peak, own.train.lr_end)


def test_overrides_apply_to_every_member_after_the_size():
    from pac.scaling.sweep import members

    got = members(LAPTOP, ["train.steps=30", "model.num_blocks=1"])
    assert {m.steps for m in got} == {30} and {m.eval_every for m in got} == {5}
    assert {m.config(LAPTOP).model.num_blocks for m in got} == {1}  # beats s4's 3, s5's 4
    by_name = {m.name: m for m in got}
    assert by_name["pac-s5-seed0"].config(LAPTOP).model.d_z == 192  # s5's own width stays


@pytest.mark.parametrize(("overrides", "message"), [
    (["loss.alpha=0.5"], "--set loss.alpha: the sweep sets it per member"),
    (["scaling.sizes=[{name: x, set: {model.d_z: 30}}]"],
     "scaling member pac-x-seed0: model.num_heads=4 must divide d_z=30"),
    (["scaling.sizes=[{name: x, set: {model.nope: 1}}]"],
     "scaling member pac-x-seed0: unknown key model.nope"),
    (["scaling.sizes=[{name: x, set: {train.seed: 3}}]"],
     "scaling.sizes.x.set: train.seed is set by the sweep per member"),
    (["scaling.sizes=[{name: x, set: {}}, {name: x, set: {}}]"], "names must be unique"),
    (["scaling.families=[pac, bc]"], "scaling.families: 'bc' is not one of pac, bc_q"),
    (["scaling.evaluations=4"], "scaling.evaluations=4 is outside the allowed range [5, inf]"),
    (["scaling.seeds=[]"], "scaling.seeds: at least one seed"),
])
def test_bad_sweeps_are_refused_in_one_line(overrides, message):
    from pac.scaling.sweep import members

    with pytest.raises(ConfigError) as exc:
        members(LAPTOP, overrides)
    assert message in str(exc.value) and "\n" not in str(exc.value)


def test_flow_command_line_is_checked_before_metaflow():
    from pac.scaling.sweep import check_sweep_argv

    assert check_sweep_argv(["run"], LAPTOP) is None
    assert check_sweep_argv(["run", "--window", "all"], LAPTOP) == (
        "--window 'all' is not one of steps, observed")
    assert "unknown key train.nope" in check_sweep_argv(["run", "--set", "train.nope=1"], LAPTOP)
    assert "not valid YAML" in check_sweep_argv(["run", "--set", "scaling.sizes=[{a"], LAPTOP)
    assert check_sweep_argv(["resume"], LAPTOP) is None


def _ladder_rows(sizes: int = 6) -> list[dict]:
    from pac.scaling.laws import rows_from_runs, synthetic_ladder

    runs = []
    for i, (family, a) in enumerate((("pac", 0.92), ("bc_q", 0.828))):
        runs += synthetic_ladder(a=a, sizes=sizes, ratio=2.0, seed=i, family=family)[0]
    return rows_from_runs(runs)


def test_fit_sweep_recovers_known_exponents_and_writes_its_input(tmp_path):
    from pac.scaling.sweep import fit_sweep
    from pac.train.periodic_eval import read_points

    rows = _ladder_rows()
    fit = fit_sweep(load_config(), rows, tmp_path, draws=0)
    assert fit.error is None and fit.dropped == {}
    # benchmarks/bench_scaling.py: 6 sizes x 2.0 read a about 0.03-0.06 low (docs/scaling.md)
    assert fit.values["pac.a"] == pytest.approx(0.92, abs=0.08)
    assert fit.values["bc_q.a"] == pytest.approx(0.828, abs=0.08)
    assert fit.values["pac.b"] == pytest.approx(0.266, abs=0.06)
    written = read_points(tmp_path / "points.csv")
    assert len(written) == len(rows)
    for got, want in zip(written, rows):
        assert got["run"] == want["run"] and float(got["return"]) == want["return"]
        assert float(got["tokens"]) == pytest.approx(want["tokens"], rel=1e-12)
    for name in ("fit.json", "profiles.png", "scaling.png", "isoreturn.png"):
        assert (tmp_path / name).is_file()


def test_fit_sweep_leaves_out_flat_runs_and_says_why_when_no_fit_is_left(tmp_path):
    from pac.scaling.sweep import fit_sweep

    rows = _ladder_rows()
    flat = [dict(r, run="pac-flat", params=123.0, **{"return": 0.25}) for r in rows
            if r["run"] == "pac-0"]
    fit = fit_sweep(load_config(), rows + flat, tmp_path / "one", draws=0)
    assert fit.error is None and list(fit.dropped) == ["pac-flat"]
    assert "returns are flat" in fit.dropped["pac-flat"]
    assert fit.values["pac.runs"] == 6.0

    one_size = [r for r in rows if r["run"] in ("pac-0", "bc_q-0", "bc_q-1")]
    fit = fit_sweep(load_config(), one_size, tmp_path / "two", draws=0)
    assert fit.values == {} and "family 'pac': runs of 1 model size(s)" in fit.error
    assert (tmp_path / "two" / "points.csv").is_file()  # the input is kept
    assert not (tmp_path / "two" / "fit.json").exists()


def test_observed_window_spans_every_evaluation():
    from pac.scaling.laws import runs_from_rows
    from pac.scaling.sweep import observed_window

    runs = runs_from_rows(_ladder_rows(3))
    lo, hi = observed_window(runs)
    flops = [r["flops"] for r in _ladder_rows(3)]
    assert (lo, hi) == pytest.approx((min(flops), max(flops)), rel=1e-12)


def test_iso_return_figure_overlays_both_families():
    from pac.scaling.laws import fit_scaling, iso_return_figure, runs_from_rows

    result = fit_scaling(runs_from_rows(_ladder_rows(4)), draws=0)
    fig = iso_return_figure(result)
    (ax,) = fig.axes
    labels = ax.get_legend().get_texts()
    assert {t.get_text() for t in labels} >= {"pac: iso-return", "bc_q: iso-return"}
    styles = {tuple(np.round(np.asarray(c.get_linestyle()[0][1] or (0,)), 3))
              if c.get_linestyle()[0][1] else "solid" for c in ax.collections}
    assert len(ax.collections) == 2 and len(styles) == 2  # two contour sets, two line styles
    assert math.isfinite(result.families["pac"].n_opt.exponent)
