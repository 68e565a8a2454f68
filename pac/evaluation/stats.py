"""The statistics of the paper's evaluation tables (Tables 1, 2, 3, 7, 13, 18).

* Success rates with Wilson score intervals at alpha_W = 0.05 (Table 1: RoboCat, CHEF domains).
* Control Suite: "percentage of achieved expert average reward" with standard-error-based 95%
  CIs (Table 1 "Gato:Control", footnote 3: the expert-performance definition of Reed et al.,
  2022). We use Gato's normalisation between a uniform-random and an expert policy::

      % of expert = 100 * (R - R_random) / (R_expert - R_random)

  so the expert scores 100% and the random policy 0% on average (a single episode can fall
  outside [0, 100]). The interval is mean +- z_{1-alpha/2} * SE with SE = std(ddof=1) / sqrt(n).

Pure numbers in, numbers out (numpy + the standard library): no simulator, no torch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from statistics import NormalDist

import numpy as np

ALPHA_W = 0.05  # the paper's significance level for every interval


def z_value(alpha: float = ALPHA_W) -> float:
    """Two-sided normal quantile z_{1 - alpha/2} (1.959964 for alpha = 0.05)."""
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
    return NormalDist().inv_cdf(1.0 - alpha / 2.0)


def wilson_interval(successes: int, trials: int, alpha: float = ALPHA_W) -> tuple[float, float]:
    """Wilson score interval (Wilson, 1927) for a binomial proportion, as fractions in [0, 1].

    centre = (p + z^2 / 2n) / (1 + z^2 / n);  half = z / (1 + z^2 / n) * sqrt(p(1-p)/n + z^2/4n^2)
    """
    if trials <= 0:
        raise ValueError(f"trials must be positive, got {trials!r}")
    if not 0 <= successes <= trials:
        raise ValueError(f"successes must be in [0, trials={trials}], got {successes!r}")
    z = z_value(alpha)
    p = successes / trials
    denom = 1.0 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials))
    low = 0.0 if successes == 0 else centre - half  # exact at the ends (no rounding residue)
    high = 1.0 if successes == trials else centre + half
    return low, high


def mean_ci(
    values: Sequence[float] | np.ndarray, alpha: float = ALPHA_W
) -> tuple[float, float, float]:
    """(mean, low, high): mean +- z * SE, SE = std(ddof=1) / sqrt(n); NaN bounds when n < 2."""
    x = np.asarray(values, dtype=np.float64).ravel()
    if x.size == 0:
        raise ValueError("mean_ci needs at least one value")
    if not np.all(np.isfinite(x)):
        raise ValueError("mean_ci: values must be finite")
    mean = float(x.mean())
    if x.size < 2:
        return mean, math.nan, math.nan
    half = z_value(alpha) * float(x.std(ddof=1)) / math.sqrt(x.size)
    return mean, mean - half, mean + half


def percent_of_expert(
    returns: Sequence[float] | np.ndarray, expert_return: float, random_return: float
) -> np.ndarray:
    """Per-episode % of expert return, 100 (R - R_random) / (R_expert - R_random) (Reed et al.)."""
    if not (math.isfinite(expert_return) and math.isfinite(random_return)):
        raise ValueError("expert and random reference returns must be finite")
    if expert_return <= random_return:
        raise ValueError(
            f"expert reference return {expert_return:g} must exceed the random reference"
            f" {random_return:g}: % of expert is undefined otherwise"
        )
    r = np.asarray(returns, dtype=np.float64)
    return 100.0 * (r - random_return) / (expert_return - random_return)


@dataclass
class Summary:
    """One row of an evaluation table: a task or a pooled group of tasks (a domain)."""

    name: str
    num_tasks: int
    episodes: int
    mean_return: float
    pct_expert: float  # mean % of expert return
    pct_expert_low: float  # standard-error 95% CI
    pct_expert_high: float
    successes: int
    success_rate: float  # percent
    success_low: float  # Wilson score interval, percent
    success_high: float

    def as_dict(self) -> dict[str, float | int | str]:
        return asdict(self)


def summarise(
    name: str,
    returns: Sequence[float] | np.ndarray,
    pct_expert: Sequence[float] | np.ndarray | None,
    successes: Sequence[bool] | np.ndarray,
    num_tasks: int = 1,
    alpha: float = ALPHA_W,
) -> Summary:
    """Summarise episodes (of one task, or pooled over a domain's tasks) into a table row.

    `pct_expert` is None when the task has no expert reference: those columns are then NaN
    (reported as N/A, as in Table 18 "where available").
    """
    r = np.asarray(returns, dtype=np.float64).ravel()
    ok = np.asarray(successes, dtype=bool).ravel()
    pct = r if pct_expert is None else np.asarray(pct_expert, dtype=np.float64).ravel()
    if r.size == 0 or not (r.size == pct.size == ok.size):
        raise ValueError(
            f"{name}: returns ({r.size}), pct_expert ({pct.size}) and successes ({ok.size})"
            " must have one entry per episode, at least one"
        )
    mean_pct, lo, hi = (math.nan,) * 3 if pct_expert is None else mean_ci(pct, alpha)
    k, n = int(ok.sum()), int(ok.size)
    w_lo, w_hi = wilson_interval(k, n, alpha)
    return Summary(
        name=name,
        num_tasks=num_tasks,
        episodes=n,
        mean_return=float(r.mean()),
        pct_expert=mean_pct,
        pct_expert_low=lo,
        pct_expert_high=hi,
        successes=k,
        success_rate=100.0 * k / n,
        success_low=100.0 * w_lo,
        success_high=100.0 * w_hi,
    )
