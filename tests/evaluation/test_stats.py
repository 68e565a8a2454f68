"""pac.evaluation.stats against scipy references and the paper's own Table 1 intervals."""

import math

import numpy as np
import pytest
from scipy import stats as sps

from pac.evaluation.stats import mean_ci, percent_of_expert, summarise, wilson_interval, z_value

COUNTS = [(0, 10), (1, 10), (5, 10), (10, 10), (28, 100), (87, 100), (399, 400), (3, 7)]


@pytest.mark.parametrize(("k", "n"), COUNTS)
def test_wilson_matches_scipy_binomtest(k, n):
    ref = sps.binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    lo, hi = wilson_interval(k, n)
    assert lo == pytest.approx(ref.low, abs=1e-12)
    assert hi == pytest.approx(ref.high, abs=1e-12)
    assert 0.0 <= lo <= k / n <= hi <= 1.0


@pytest.mark.parametrize(
    ("k", "n", "paper"),
    [  # Table 1 rows: CHEF:sim (100 trials) and RC:Tower FilteredBC (7 tasks x 100 trials)
        (17, 100, (10.9, 25.5)),
        (11, 100, (6.3, 18.6)),
        (55, 100, (45.2, 64.4)),
        (52, 100, (42.3, 61.5)),
        (448, 700, (60.4, 67.5)),
    ],
)
def test_wilson_reproduces_paper_table_1(k, n, paper):
    lo, hi = wilson_interval(k, n)
    assert (round(100 * lo, 1), round(100 * hi, 1)) == paper


def test_wilson_other_alpha_and_bad_counts():
    z = sps.norm.ppf(0.995)
    lo, hi = wilson_interval(30, 50, alpha=0.01)
    p, n = 0.6, 50
    centre = (p + z**2 / (2 * n)) / (1 + z**2 / n)
    half = z / (1 + z**2 / n) * math.sqrt(p * (1 - p) / n + z**2 / (4 * n * n))
    assert (lo, hi) == pytest.approx((centre - half, centre + half), abs=1e-12)
    with pytest.raises(ValueError, match="trials must be positive"):
        wilson_interval(0, 0)
    with pytest.raises(ValueError, match="successes must be in"):
        wilson_interval(11, 10)
    with pytest.raises(ValueError, match="alpha must be in"):
        wilson_interval(1, 10, alpha=1.5)


def test_mean_ci_matches_scipy_standard_error():
    rng = np.random.default_rng(0)
    for n in (2, 10, 100):
        x = rng.normal(50.0, 20.0, size=n)
        mean, lo, hi = mean_ci(x)
        half = sps.norm.ppf(0.975) * sps.sem(x)
        assert mean == pytest.approx(x.mean())
        assert (lo, hi) == pytest.approx((x.mean() - half, x.mean() + half), rel=1e-12)
    assert z_value() == pytest.approx(1.959963984540054)
    mean, lo, hi = mean_ci([3.0])
    assert mean == 3.0 and math.isnan(lo) and math.isnan(hi)
    with pytest.raises(ValueError, match="at least one"):
        mean_ci([])
    with pytest.raises(ValueError, match="finite"):
        mean_ci([1.0, float("nan")])


def test_percent_of_expert_is_random_normalised():
    pct = percent_of_expert([10.0, 55.0, 100.0, 0.0], expert_return=100.0, random_return=10.0)
    np.testing.assert_allclose(pct, [0.0, 50.0, 100.0, -100.0 / 9.0])
    with pytest.raises(ValueError, match="must exceed the random reference"):
        percent_of_expert([1.0], expert_return=5.0, random_return=5.0)


def test_summarise_row():
    returns = np.array([90.0, 100.0, 110.0, 20.0])
    pct = percent_of_expert(returns, expert_return=100.0, random_return=0.0)
    row = summarise("cartpole", returns, pct, [True, True, True, False], num_tasks=2)
    assert row.episodes == 4 and row.successes == 3 and row.num_tasks == 2
    assert row.mean_return == pytest.approx(80.0)
    assert row.pct_expert == pytest.approx(80.0)
    half = sps.norm.ppf(0.975) * sps.sem(pct)
    assert (row.pct_expert_low, row.pct_expert_high) == pytest.approx((80 - half, 80 + half))
    ref = sps.binomtest(3, 4).proportion_ci(method="wilson")
    assert row.success_rate == 75.0
    assert row.success_low == pytest.approx(100 * ref.low)
    assert row.success_high == pytest.approx(100 * ref.high)
    with pytest.raises(ValueError, match="one entry per episode"):
        summarise("x", returns, pct, [True])


def test_summarise_without_expert_reference_reports_nan():
    row = summarise("cartpole.swingup", [1.0, 2.0], None, [False, True])
    assert math.isnan(row.pct_expert) and math.isnan(row.pct_expert_low)
    assert row.mean_return == 1.5 and row.success_rate == 50.0
