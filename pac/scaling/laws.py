"""Scaling laws for offline RL (§4.1, App. E.1): return profiles, envelope, power laws, iso-return.

The method of §4.1, step by step:

1. **Return profile** per run (eq. 18): R(n) = a / (1 + exp(-k (n - n_0))) + b fitted to the
   run's evaluations (average return normalised to [0, 1] after n updates) with
   ``scipy.optimize.curve_fit``; the parameter covariance gives each parameter's standard error.
2. **Envelope**: each profile is put on the FLOP axis (C = n x FLOPs per update of its model),
   and at 100 log-spaced budgets C within the observed range the best profile is selected
   (Figure 3, left). A profile only competes inside its own evaluated range [first, last
   evaluation]: the logistic is not trusted beyond the checkpoints it was fitted to.
3. **Power laws** (eq. 4): N_opt(C) = N_0 C^a and D_opt(C) = D_0 C^b, least squares in log-log
   space over the envelope points, where N is the selected run's parameter count and D the tokens
   it had consumed at C. Separately per model family (e.g. PAC and BC+Q).
4. **Iso-return landscape** (Figure 4): every profile sampled over its FLOP range, as
   (parameters, FLOPs, return) triples per family, for contours in the parameters-FLOPs plane.

Uncertainty of the exponents, two numbers. The OLS interval (t distribution over the envelope
points) is the fit as the paper draws it, but the 100 envelope points are a deterministic
staircase of a few model sizes, not independent samples, so it is too narrow. The bootstrap
interval propagates the profiles' own uncertainty: each run's (a, k, n_0, b) is redrawn from its
curve_fit covariance, the envelope and the power laws are refitted, and the 2.5-97.5 percentiles
of the exponents are reported (200 draws, seeded: reproducible).

Input: evaluation points as CSV or JSON (``load_points``): per row ``run``, ``params`` (N),
``step`` (updates), ``return`` (normalised to [0, 1]), and either ``flops`` (training FLOPs at
that step) or ``flops_per_update``; optionally ``family`` and ``tokens`` or ``tokens_per_update``
(without them there is no D_opt fit). Everything is validated before any fit.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

#: A logistic has four parameters; one more point leaves one degree of freedom for its error.
MIN_POINTS = 5
#: Returns whose range over a run is below this are flat: no rise to fit a logistic to.
MIN_RETURN_RANGE = 1e-3
ENVELOPE_POINTS = 100
BOOTSTRAP_DRAWS = 200


class ScalingInputError(ValueError):
    """Bad or insufficient input for a scaling fit; the message names the run or row."""


# --- input ---------------------------------------------------------------------------------------


@dataclass
class Run:
    """One training run: its model, its cost per update, and its evaluations (eq. 18's data)."""

    name: str
    family: str
    params: float  # N
    flops_per_update: float
    tokens_per_update: float | None
    steps: np.ndarray  # updates n, ascending
    returns: np.ndarray  # normalised average return in [0, 1]

    @property
    def flops_range(self) -> tuple[float, float]:
        return float(self.steps[0] * self.flops_per_update), float(
            self.steps[-1] * self.flops_per_update
        )


def _number(row: dict[str, Any], key: str, where: str) -> float:
    try:
        value = float(row[key])
    except (TypeError, ValueError):
        raise ScalingInputError(f"{where}: {key}={row[key]!r} is not a number") from None
    if not math.isfinite(value):
        raise ScalingInputError(f"{where}: {key}={row[key]!r} is not finite")
    return value


def _optional(row: dict[str, Any], key: str) -> bool:
    return row.get(key) not in (None, "")


def runs_from_rows(rows: Sequence[dict[str, Any]], source: str = "input") -> list[Run]:
    """Group evaluation rows into runs, checking every value and each run's consistency."""
    if not rows:
        raise ScalingInputError(f"{source}: no evaluation points")
    missing = [k for k in ("run", "params", "step", "return") if k not in rows[0]]
    if missing:
        raise ScalingInputError(
            f"{source}: missing column(s) {', '.join(missing)}; need run, params, step, return"
            " and flops or flops_per_update"
        )
    grouped: dict[str, list[dict[str, Any]]] = {}
    for i, row in enumerate(rows):
        where = f"{source} row {i + 1}"
        name = str(row.get("run") or "").strip()
        if not name:
            raise ScalingInputError(f"{where}: empty run name")
        params, step, ret = (_number(row, k, where) for k in ("params", "step", "return"))
        if params <= 0:
            raise ScalingInputError(f"{where}: params={params:g} must be > 0")
        if step < 0:
            raise ScalingInputError(f"{where}: step={step:g} must be >= 0")
        if not 0.0 <= ret <= 1.0:
            raise ScalingInputError(
                f"{where}: return={ret:g} is outside [0, 1]; normalise returns per task first"
            )
        if _optional(row, "flops_per_update"):
            fpu = _number(row, "flops_per_update", where)
        elif _optional(row, "flops"):
            if step <= 0:
                raise ScalingInputError(f"{where}: flops given at step 0: need flops_per_update")
            fpu = _number(row, "flops", where) / step
        else:
            raise ScalingInputError(f"{where}: needs flops or flops_per_update")
        if fpu <= 0:
            raise ScalingInputError(f"{where}: FLOPs per update must be > 0")
        tpu = None
        if _optional(row, "tokens_per_update"):
            tpu = _number(row, "tokens_per_update", where)
        elif _optional(row, "tokens") and step > 0:
            tpu = _number(row, "tokens", where) / step
        if tpu is not None and tpu <= 0:
            raise ScalingInputError(f"{where}: tokens per update must be > 0")
        family = str(row.get("family") or "all").strip() or "all"
        grouped.setdefault(name, []).append(
            {"family": family, "params": params, "step": step, "return": ret, "fpu": fpu,
             "tpu": tpu, "where": where}
        )
    return [_make_run(name, points) for name, points in grouped.items()]


def _make_run(name: str, points: list[dict[str, Any]]) -> Run:
    first = points[0]
    for p in points[1:]:
        for key, label, rel in (("family", "family", 0), ("params", "params", 1e-9),
                                ("fpu", "FLOPs per update", 1e-6)):
            a, b = first[key], p[key]
            same = a == b if rel == 0 else abs(a - b) <= rel * max(abs(a), abs(b))
            if not same:
                raise ScalingInputError(
                    f"run {name!r}: {label} differs between rows ({a} at {first['where']},"
                    f" {b} at {p['where']}): one run has one model and one cost per update"
                )
    tpus = [p["tpu"] for p in points if p["tpu"] is not None]
    if tpus and max(tpus) - min(tpus) > 1e-6 * max(tpus):
        raise ScalingInputError(f"run {name!r}: tokens per update differ between rows")
    steps = np.array([p["step"] for p in points])
    if len(np.unique(steps)) != len(steps):
        raise ScalingInputError(f"run {name!r}: more than one evaluation at the same step")
    order = np.argsort(steps)
    return Run(
        name=name,
        family=first["family"],
        params=first["params"],
        flops_per_update=float(np.median([p["fpu"] for p in points])),
        tokens_per_update=tpus[0] if tpus else None,
        steps=steps[order],
        returns=np.array([p["return"] for p in points])[order],
    )


def load_points(path: str | Path) -> list[Run]:
    """Runs from a CSV (one row per evaluation) or JSON file (read only; never unpickled).

    JSON: a list of row objects, ``{"points": [rows]}``, or ``{"runs": [{"run", "params",
    "family", "flops_per_update", "tokens_per_update", "points": [{"step", "return"}]}]}``.
    """
    path = Path(path)
    if not path.is_file():
        raise ScalingInputError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        with open(path, newline="") as fh:
            rows = list(csv.DictReader(fh))
    elif suffix == ".json":
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ScalingInputError(f"{path}: not valid JSON ({exc})") from None
        rows = _json_rows(data, path)
    else:
        raise ScalingInputError(f"{path}: expected a .csv or .json file")
    return runs_from_rows(rows, str(path))


def _json_rows(data: Any, path: Path) -> list[dict[str, Any]]:
    if isinstance(data, dict) and "runs" in data:
        rows = []
        for run in data["runs"]:
            if not isinstance(run, dict) or not isinstance(run.get("points"), list):
                raise ScalingInputError(f"{path}: every entry of 'runs' needs a 'points' list")
            meta = {k: v for k, v in run.items() if k != "points"}
            rows += [meta | point for point in run["points"]]
        return rows
    if isinstance(data, dict) and "points" in data:
        data = data["points"]
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise ScalingInputError(f"{path}: expected a list of rows, 'points' or 'runs'")
    return data


# --- return profiles (eq. 18) --------------------------------------------------------------------


def logistic(n: np.ndarray | float, a: float, k: float, n0: float, b: float) -> np.ndarray:
    """Eq. 18: R(n) = a / (1 + exp(-k (n - n0))) + b (overflow-safe)."""
    x = np.clip(-k * (np.asarray(n, dtype=float) - n0), -500.0, 500.0)
    return a / (1.0 + np.exp(x)) + b


@dataclass
class Profile:
    """A run's fitted return profile: eq. 18's parameters, their covariance and fit quality."""

    run: Run
    a: float
    k: float
    n0: float
    b: float
    cov: np.ndarray  # 4 x 4, order (a, k, n0, b)
    rmse: float

    @property
    def params(self) -> np.ndarray:
        return np.array([self.a, self.k, self.n0, self.b])

    @property
    def stderr(self) -> np.ndarray:
        return np.sqrt(np.clip(np.diag(self.cov), 0.0, None))

    def at_steps(self, n: np.ndarray | float, params: np.ndarray | None = None) -> np.ndarray:
        return logistic(n, *(self.params if params is None else params))

    def at_flops(self, c: np.ndarray | float, params: np.ndarray | None = None) -> np.ndarray:
        return self.at_steps(np.asarray(c) / self.run.flops_per_update, params)


def fit_profile(run: Run) -> Profile:
    """Eq. 18 by least squares (``curve_fit``, trust-region with bounds) from a run's points.

    Steps are scaled to [0, 1] by the last evaluation for conditioning. Bounds: 0 <= a <= 2,
    k >= 0 (return rises with training), n_0 within [-2, 3] x the last step, |b| <= 1 (returns
    are normalised to [0, 1]). Several starting points are tried and the lowest residual kept,
    because a logistic's least-squares surface has flat directions when the data sit on one
    side of n_0.
    """
    from scipy.optimize import curve_fit

    if len(run.steps) < MIN_POINTS:
        raise ScalingInputError(
            f"run {run.name!r}: {len(run.steps)} evaluation points; the return profile (eq. 18)"
            f" has 4 parameters and needs at least {MIN_POINTS}"
        )
    spread = float(np.ptp(run.returns))
    if spread < MIN_RETURN_RANGE:
        raise ScalingInputError(
            f"run {run.name!r}: returns are flat (range {spread:.2g} < {MIN_RETURN_RANGE:g}):"
            " there is no rise to fit a return profile to"
        )
    scale = float(run.steps[-1]) or 1.0
    u, r = run.steps / scale, run.returns
    mid = float(np.interp(r.min() + spread / 2, np.maximum.accumulate(r), u))
    lower, upper = [0.0, 0.0, -2.0, -1.0], [2.0, 1e3, 3.0, 1.0]
    best = None
    for k0, n0 in ((2.0, mid), (8.0, mid), (30.0, mid), (8.0, 0.0)):
        p0 = [spread, k0, n0, float(r.min())]
        p0 = [min(max(v, lo + 1e-9), hi - 1e-9) for v, lo, hi in zip(p0, lower, upper)]
        try:
            popt, pcov = curve_fit(logistic, u, r, p0=p0, bounds=(lower, upper), maxfev=20000)
        except (RuntimeError, ValueError):
            continue
        sse = float(np.sum((logistic(u, *popt) - r) ** 2))
        if best is None or sse < best[0]:
            best = (sse, popt, pcov)
    if best is None:
        raise ScalingInputError(
            f"run {run.name!r}: the logistic fit (eq. 18) did not converge; its returns (range"
            f" {spread:.3g}) may all lie on one side of the rise, e.g. on the plateau: evaluate"
            " earlier checkpoints"
        )
    sse, (a, ku, n0u, b), pcov = best
    to_steps = np.diag([1.0, 1.0 / scale, scale, 1.0])  # (a, k_u, n0_u, b) -> (a, k, n0, b)
    cov = to_steps @ pcov @ to_steps
    return Profile(run, float(a), float(ku / scale), float(n0u * scale), float(b), cov,
                   math.sqrt(sse / len(u)))


# --- envelope and power laws (Figure 3, eq. 4) ---------------------------------------------------


@dataclass
class Envelope:
    """The best profile at each FLOP budget: the compute-optimal run per budget."""

    family: str
    flops: np.ndarray
    returns: np.ndarray
    runs: list[str]
    params: np.ndarray
    tokens: np.ndarray | None  # tokens consumed by the selected run at C (None: not given)


def overlap_window(runs: Sequence[Run]) -> tuple[float, float]:
    """The budgets at which at least two runs were evaluated: where there is a choice of size.

    Outside it a single run is the envelope by default (the smallest model before any other was
    evaluated, the largest after all others stopped), which is no evidence about N_opt. Falls
    back to the whole observed range when no two runs overlap.
    """
    starts = sorted(r.flops_range[0] for r in runs)
    ends = sorted(r.flops_range[1] for r in runs)
    lo, hi = starts[1], ends[-2]
    if lo >= hi:
        return starts[0], ends[-1]
    return lo, hi


def observed_window(runs: Sequence[Run]) -> tuple[float, float]:
    """From the first to the last evaluated budget of `runs`.

    With every size trained for the same number of updates (App. E.1) the smallest model is
    alone on the envelope below the larger ones' first evaluation and the largest above the
    others' last one, so this window always selects at least two sizes; the default window of
    a ladder of two or three sizes can select one only (then eq. 4 cannot be fitted)."""
    return min(r.flops_range[0] for r in runs), max(r.flops_range[1] for r in runs)


def step_window(profiles: Sequence[Profile], num: int = ENVELOPE_POINTS) -> tuple[float, float]:
    """The default FLOP window: from the first to the last size change of the envelope.

    The envelope is a staircase of a few sizes, and a least-squares line through it depends on
    how the window cuts its first and last steps: whole steps only, not the overlap window
    whose ends the smallest and largest models fill (docs/scaling.md, "What it computes").
    With fewer than two size changes it is the overlap window.
    """
    lo, hi = overlap_window([p.run for p in profiles])
    env = envelope(profiles, num, (lo, hi))
    edge = np.flatnonzero(env.params[1:] != env.params[:-1]) + 1
    if len(edge) < 2:
        return lo, hi
    c = np.sqrt(env.flops[edge - 1] * env.flops[edge])
    return float(c[0]), float(c[-1])


def envelope(profiles: Sequence[Profile], num: int = ENVELOPE_POINTS,
             window: tuple[float, float] | None = None,
             draws: Sequence[np.ndarray] | None = None, family: str = "all") -> Envelope:
    """Argmax over profiles at `num` log-spaced FLOP budgets in `window` (default:
    ``overlap_window``).

    A profile competes at C only inside its own evaluated FLOP range; budgets no run covers are
    dropped. `draws` (one parameter vector per profile) replaces the fitted parameters (used by
    the bootstrap).
    """
    lo, hi = window or overlap_window([p.run for p in profiles])
    if not 0 < lo < hi:
        raise ScalingInputError(f"FLOP window [{lo:g}, {hi:g}] is empty")
    grid = np.logspace(math.log10(lo), math.log10(hi), num)
    values = np.full((len(profiles), num), -np.inf)
    for i, prof in enumerate(profiles):
        first, last = prof.run.flops_range
        inside = (grid >= first * (1 - 1e-12)) & (grid <= last * (1 + 1e-12))
        values[i, inside] = prof.at_flops(grid[inside], None if draws is None else draws[i])
    covered = np.isfinite(values).any(0)
    if not covered.any():
        raise ScalingInputError(f"no run was evaluated inside the FLOP window [{lo:g}, {hi:g}]")
    best = np.argmax(values[:, covered], axis=0)
    chosen = [profiles[i] for i in best]
    flops = grid[covered]
    tokens = None
    if all(p.run.tokens_per_update for p in profiles):
        tokens = np.array([c / p.run.flops_per_update * p.run.tokens_per_update
                           for c, p in zip(flops, chosen)])
    return Envelope(family, flops, values[best, np.flatnonzero(covered)],
                    [p.run.name for p in chosen], np.array([p.run.params for p in chosen]),
                    tokens)


@dataclass
class PowerLaw:
    """y = y0 * C^exponent from a least-squares line in log10-log10 space."""

    exponent: float
    log10_coef: float  # log10 y0
    stderr: float
    ci: tuple[float, float]  # OLS 95% interval of the exponent
    n_points: int
    bootstrap_ci: tuple[float, float] | None = None

    def __call__(self, c: float | np.ndarray) -> np.ndarray:
        return 10.0 ** (self.log10_coef + self.exponent * np.log10(c))

    def inverse(self, y: float) -> float:
        """The budget C at which the law gives y."""
        return float(10.0 ** ((math.log10(y) - self.log10_coef) / self.exponent))

    def to_dict(self) -> dict[str, Any]:
        return {"exponent": self.exponent, "coef": 10.0**self.log10_coef,
                "log10_coef": self.log10_coef, "stderr": self.stderr, "ci95": list(self.ci),
                "bootstrap_ci95": None if self.bootstrap_ci is None else list(self.bootstrap_ci),
                "n_points": self.n_points}


def fit_power_law(c: np.ndarray, y: np.ndarray, what: str = "N") -> PowerLaw:
    """log10 y = log10 y0 + e log10 C by ordinary least squares, with its t-based 95% interval."""
    from scipy import stats

    if len(np.unique(y)) < 2:
        raise ScalingInputError(
            f"the envelope selects a single {what} ({y[0]:.4g}) at every FLOP budget: a power"
            f" law {what}_opt(C) cannot be fitted; add model sizes or longer runs"
        )
    if len(y) < 3:
        raise ScalingInputError(f"{len(y)} points for the {what}_opt power law: need at least 3")
    x, t = np.log10(c), np.log10(y)
    res = stats.linregress(x, t)
    q = stats.t.ppf(0.975, len(x) - 2)
    return PowerLaw(float(res.slope), float(res.intercept), float(res.stderr),
                    (float(res.slope - q * res.stderr), float(res.slope + q * res.stderr)),
                    len(x))


@dataclass
class FamilyFit:
    family: str
    profiles: list[Profile]
    envelope: Envelope
    n_opt: PowerLaw
    d_opt: PowerLaw | None
    n_opt_crossings: PowerLaw | None = None  # eq. 4 through the envelope's step edges
    d_opt_crossings: PowerLaw | None = None
    notes: list[str] = field(default_factory=list)

    def optimal_params(self, flops: float | None = None, tokens: float | None = None) -> float:
        """N_opt for a FLOP budget, or for a data budget D via C = (D / D_0)^(1/b) (§4.1)."""
        if flops is None and tokens is None:
            raise ValueError("give a FLOP budget or a data budget")
        if flops is None:
            if self.d_opt is None:
                raise ScalingInputError(f"{self.family}: no D_opt fit (no tokens in the input)")
            flops = self.d_opt.inverse(tokens)
        return float(self.n_opt(flops))

    def to_dict(self) -> dict[str, Any]:
        return {
            "family": self.family,
            "runs": len(self.profiles),
            "a": self.n_opt.exponent, "N0": 10.0**self.n_opt.log10_coef,
            "b": None if self.d_opt is None else self.d_opt.exponent,
            "D0": None if self.d_opt is None else 10.0**self.d_opt.log10_coef,
            "n_opt": self.n_opt.to_dict(),
            "d_opt": None if self.d_opt is None else self.d_opt.to_dict(),
            "n_opt_crossings": None if self.n_opt_crossings is None
            else self.n_opt_crossings.to_dict(),
            "d_opt_crossings": None if self.d_opt_crossings is None
            else self.d_opt_crossings.to_dict(),
            "envelope_flops_range": [float(self.envelope.flops[0]),
                                     float(self.envelope.flops[-1])],
            "envelope_points": len(self.envelope.flops),
            "notes": self.notes,
        }


def crossings(env: Envelope) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Budgets C* where the envelope's selected size changes; sqrt(N_k N_k+1) and the
    geometric-mean tokens of the two runs there.

    A second estimate of eq. 4, not in the paper. The 100 envelope points form a staircase of a
    few sizes, and a least-squares line through a staircase depends on where the FLOP window
    cuts its first and last steps: on the 12-size synthetic ladder of tests/scaling/test_scaling.py
    (true a = 0.92) the default window gives a = 0.72 and a window aligned with whole steps
    0.92, while the line through the step edges gives 0.92-0.94 with either window.
    """
    edge = np.flatnonzero(env.params[1:] != env.params[:-1]) + 1
    c = np.sqrt(env.flops[edge - 1] * env.flops[edge])
    n = np.sqrt(env.params[edge - 1] * env.params[edge])
    d = None if env.tokens is None else np.sqrt(env.tokens[edge - 1] * env.tokens[edge])
    return c, n, d


def fit_family(profiles: Sequence[Profile], family: str, num: int = ENVELOPE_POINTS,
               draws: int = BOOTSTRAP_DRAWS, seed: int = 0,
               window: tuple[float, float] | None = None) -> FamilyFit:
    """Envelope and eq. 4 for one family, with parametric-bootstrap intervals of a and b."""
    window = window or step_window(profiles, num)
    env = envelope(profiles, num, window, family=family)
    n_opt = fit_power_law(env.flops, env.params, "N")
    d_opt = fit_power_law(env.flops, env.tokens, "D") if env.tokens is not None else None
    notes = [] if env.tokens is not None else ["no tokens in the input: D_opt not fitted"]
    edge_c, edge_n, edge_d = crossings(env)
    n_cross = d_cross = None
    if len(edge_c) >= 3:
        n_cross = fit_power_law(edge_c, edge_n)
        d_cross = None if edge_d is None else fit_power_law(edge_c, edge_d, "D")
        if not n_cross.ci[0] <= n_opt.exponent <= n_cross.ci[1]:
            notes.append(
                f"a = {n_opt.exponent:.3f} from the envelope points lies outside the step-edge"
                f" interval [{n_cross.ci[0]:.3f}, {n_cross.ci[1]:.3f}]: the FLOP window cuts"
                " steps of the staircase; set --flops-min/--flops-max on step edges"
            )
    else:
        notes.append(f"{len(edge_c)} size change(s) on the envelope: no step-edge fit (needs 3)")
    if draws:
        rng = np.random.default_rng(seed)
        a_s, b_s = [], []
        for _ in range(draws):
            sample = [_draw(p, rng) for p in profiles]
            e = envelope(profiles, num, window, draws=sample, family=family)
            if len(np.unique(e.params)) < 2:
                continue
            a_s.append(fit_power_law(e.flops, e.params).exponent)
            if e.tokens is not None:
                b_s.append(fit_power_law(e.flops, e.tokens, "D").exponent)
        if len(a_s) < draws:
            notes.append(f"bootstrap: {draws - len(a_s)} of {draws} draws selected one size only")
        if a_s:
            n_opt.bootstrap_ci = tuple(float(v) for v in np.percentile(a_s, [2.5, 97.5]))
        if b_s and d_opt is not None:
            d_opt.bootstrap_ci = tuple(float(v) for v in np.percentile(b_s, [2.5, 97.5]))
    return FamilyFit(family, list(profiles), env, n_opt, d_opt, n_cross, d_cross, notes)


def _draw(profile: Profile, rng: np.random.Generator) -> np.ndarray:
    """One draw of (a, k, n0, b) from the fit's covariance; the point estimate if it is singular."""
    cov = profile.cov
    if not np.all(np.isfinite(cov)):
        return profile.params
    sample = rng.multivariate_normal(profile.params, cov, check_valid="ignore")
    sample[1] = max(sample[1], 0.0)  # the fit's bound k >= 0
    return sample


# --- iso-return landscape (Figure 4) ------------------------------------------------------------


def iso_return_points(profiles: Iterable[Profile], per_run: int = 50) -> list[dict[str, Any]]:
    """(family, run, params, flops, return) along each profile's evaluated FLOP range."""
    rows = []
    for p in profiles:
        lo, hi = p.run.flops_range
        for c in np.logspace(math.log10(lo), math.log10(hi), per_run):
            rows.append({"family": p.run.family, "run": p.run.name, "params": p.run.params,
                         "flops": float(c), "return": float(p.at_flops(c))})
    return rows


# --- everything ----------------------------------------------------------------------------------


@dataclass
class ScalingResult:
    profiles: list[Profile]
    families: dict[str, FamilyFit]
    contours: list[dict[str, Any]]

    def summary(self) -> dict[str, Any]:
        return {"families": {k: v.to_dict() for k, v in self.families.items()},
                "profiles": [profile_row(p) for p in self.profiles]}


def profile_row(p: Profile) -> dict[str, Any]:
    se = p.stderr
    return {"run": p.run.name, "family": p.run.family, "params": p.run.params,
            "flops_per_update": p.run.flops_per_update, "points": len(p.run.steps),
            "a": p.a, "k": p.k, "n0": p.n0, "b": p.b, "a_se": se[0], "k_se": se[1],
            "n0_se": se[2], "b_se": se[3], "rmse": p.rmse}


def fit_scaling(runs: Sequence[Run], num: int = ENVELOPE_POINTS, draws: int = BOOTSTRAP_DRAWS,
                seed: int = 0, window: tuple[float, float] | str | None = None) -> ScalingResult:
    """Profiles for every run, then envelope and power laws per family (validated first)."""
    profiles = [fit_profile(r) for r in runs]  # raises on the first run that cannot be fitted
    return fit_profiles(profiles, num, draws, seed, window)


def fit_profiles(profiles: Sequence[Profile], num: int = ENVELOPE_POINTS,
                 draws: int = BOOTSTRAP_DRAWS, seed: int = 0,
                 window: tuple[float, float] | str | None = None) -> ScalingResult:
    """Envelope and power laws per family of already fitted profiles.

    `window` is the envelope's FLOP range: a (low, high) pair, None (each family's
    :func:`step_window`) or ``"observed"`` (each family's :func:`observed_window`)."""
    families: dict[str, FamilyFit] = {}
    for family in sorted({p.run.family for p in profiles}):
        members = [p for p in profiles if p.run.family == family]
        sizes = {p.run.params for p in members}
        if len(sizes) < 2:
            raise ScalingInputError(
                f"family {family!r}: runs of {len(sizes)} model size(s); the power laws of eq. 4"
                " need at least two sizes"
            )
        span = observed_window([p.run for p in members]) if window == "observed" else window
        families[family] = fit_family(members, family, num, draws, seed, span)
    return ScalingResult(list(profiles), families, iso_return_points(profiles))


def write_outputs(result: ScalingResult, out: str | Path, figures: bool = True) -> list[Path]:
    """fit.json, profiles.csv, envelope.csv, contours.csv and the PNGs in `out` (atomically)."""
    from pac.io import atomic_write, atomic_write_text

    out = Path(out)
    written = [atomic_write_text(out / "fit.json", json.dumps(result.summary(), indent=1))]
    written.append(_write_csv(out / "profiles.csv", [profile_row(p) for p in result.profiles]))
    env_rows = []
    for fam in result.families.values():
        e = fam.envelope
        for i in range(len(e.flops)):
            env_rows.append({"family": fam.family, "flops": e.flops[i], "return": e.returns[i],
                             "run": e.runs[i], "params": e.params[i],
                             "tokens": "" if e.tokens is None else e.tokens[i]})
    written.append(_write_csv(out / "envelope.csv", env_rows))
    written.append(_write_csv(out / "contours.csv", result.contours))
    if figures:
        for name, draw in (("profiles.png", profiles_figure), ("scaling.png", power_law_figure),
                           ("isoreturn.png", iso_return_figure)):
            fig = draw(result)
            written.append(atomic_write(out / name, lambda fh, f=fig: f.savefig(fh, format="png",
                                                                             dpi=120)))
            _plt().close(fig)
    return written



def fit_params(result: ScalingResult) -> dict[str, float | None]:
    """The fit as flat key -> number: per family a, b, N0, D0 and their 95% intervals."""
    out: dict[str, float | None] = {}
    for name, fam in result.families.items():
        for sym, coef, law in (("a", "N0", fam.n_opt), ("b", "D0", fam.d_opt),
                               ("a_edges", "N0_edges", fam.n_opt_crossings),
                               ("b_edges", "D0_edges", fam.d_opt_crossings)):
            if law is None:
                continue
            out[f"{name}.{sym}"] = law.exponent
            out[f"{name}.{coef}"] = 10.0**law.log10_coef
            out[f"{name}.{sym}_ci95_low"], out[f"{name}.{sym}_ci95_high"] = law.ci
            if law.bootstrap_ci is not None:
                lo, hi = law.bootstrap_ci
                out[f"{name}.{sym}_boot95_low"], out[f"{name}.{sym}_boot95_high"] = lo, hi
        out[f"{name}.runs"] = float(len(fam.profiles))
    return out


def log_fit(tracker: Any, result: ScalingResult, out: str | Path | None = None) -> None:
    """Log the fit to a ``pac.tracking.Tracker`` run: params and metrics (step 0) of
    ``fit_params``, the written tables and figures as artefacts under ``scaling/``."""
    values = fit_params(result)
    tracker.log_params(values)
    tracker.log_metrics({k: v for k, v in values.items() if v is not None}, step=0)
    if out is not None:
        tracker.log_artifacts(out, "scaling")


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> Path:
    from pac.io import atomic_write_csv

    return atomic_write_csv(path, rows, newline="\r\n")  # csv's default line ends, as before


# --- a ladder with known exponents ---------------------------------------------------------------


def synthetic_ladder(a: float = 0.92, b: float = 0.266, sizes: int = 12, ratio: float = 1.35,
                     seed: int = 0, noise: float = 0.005, points: int = 12, family: str = "pac",
                     plateau_gain: float = 1.03, kappa: float = 3.0
                     ) -> tuple[list[Run], tuple[float, float]]:
    """Runs whose compute-optimal size follows N_opt = N_0 C^a and D_opt = D_0 C^b exactly.

    For checking the fit (tests/scaling/test_scaling.py, benchmarks/bench_scaling.py) and for trying
    ``pac scaling fit`` without a sweep. Model i (N_i = 1e6 ratio^i) costs f_i = 1e12
    (N_i / 1e6)^gamma FLOPs per update with gamma = (1 - b) / a, so that the tokens it has
    consumed at budget C, D = C tau / f_i, grow as C^(1 - gamma a) = C^b along the envelope. Its
    return over FLOPs is A_i s(kappa (C / C_i - 1)) + 0.05 with C_i = 1e18 (N_i / 1e6)^(1 / a)
    and plateaus A_i = 0.45 plateau_gain^i: one curve for every model up to a shift in log C, so
    model i+1 overtakes model i at x C_{i+1} with the same x for all i and the staircase of
    optimal sizes has slope a in log-log. In updates this is eq. 18 with k = kappa f_i / C_i and
    n_0 = C_i / f_i; each run has `points` evenly spaced evaluations up to 1.5 times the budget at
    which the next size overtakes it, with Gaussian noise of sd `noise` (seeded). Returns the runs
    and the FLOP window spanning whole steps of the staircase.
    """
    from scipy.optimize import brentq

    def sigmoid(z: float) -> float:
        return 1.0 / (1.0 + math.exp(-z))

    gamma = (1 - b) / a
    rng = np.random.default_rng(seed)
    r_c = ratio ** (1 / a)
    x = brentq(lambda x: plateau_gain * sigmoid(kappa * (x - 1))
               - sigmoid(kappa * (r_c * x - 1)), 0.5, 10)
    runs, tau = [], 2560 * 354.0  # tokens per update: B x T = 512 x 5 steps of 354 tokens
    for i in range(sizes):
        n_params = 1e6 * ratio**i
        f = 1e12 * (n_params / 1e6) ** gamma
        c_i = 1e18 * (n_params / 1e6) ** (1 / a)
        c_end = 1.5 * x * r_c * c_i
        steps = np.linspace(1, points, points) * c_end / f / points
        clean = logistic(steps, 0.45 * plateau_gain**i, kappa * f / c_i, c_i / f, 0.05)
        ret = np.clip(clean + rng.normal(0, noise, points), 0, 1)
        runs.append(Run(f"{family}-{i}", family, n_params, f, tau, steps, ret))
    edge = 1e18 * x
    return runs, (edge * ratio ** (1 / a) * 1.0001, edge * ratio ** ((sizes - 1) / a) * 0.9999)


def rows_from_runs(runs: Iterable[Run]) -> list[dict[str, Any]]:
    """The input rows (``load_points``'s format) of runs: one per evaluation."""
    return [{"run": r.name, "family": r.family, "params": r.params, "step": float(s),
             "flops": float(s * r.flops_per_update), "return": float(v)}
            | ({} if r.tokens_per_update is None else {"tokens": float(s * r.tokens_per_update)})
            for r in runs for s, v in zip(r.steps, r.returns)]


# --- figures (Figures 3 and 4) ------------------------------------------------------------------


def _plt():
    from pac.plots import plt  # the project's matplotlib, Agg backend

    return plt


def _log_axes(ax, y: bool = False) -> None:
    """Log scale with plain '1e+18' tick labels: mathtext labels cost seconds per figure."""
    from matplotlib.ticker import LogFormatter

    axes = [ax.xaxis] + ([ax.yaxis] if y else [])
    ax.set_xscale("log")
    if y:
        ax.set_yscale("log")
    for axis in axes:
        axis.set_major_formatter(LogFormatter(labelOnlyBase=True))
        axis.set_minor_formatter(LogFormatter(labelOnlyBase=True))


def profiles_figure(result: ScalingResult):
    """Return profiles against FLOPs per family, evaluations as dots, the envelope in black."""
    plt = _plt()
    fams = list(result.families.values())
    fig, axes = plt.subplots(1, len(fams), figsize=(5 * len(fams), 3.6), squeeze=False)
    for ax, fam in zip(axes[0], fams):
        sizes = sorted({p.run.params for p in fam.profiles})
        cmap = plt.get_cmap("viridis")
        for p in fam.profiles:
            color = cmap(sizes.index(p.run.params) / max(len(sizes) - 1, 1))
            lo, hi = p.run.flops_range
            c = np.logspace(math.log10(lo), math.log10(hi), 100)
            ax.plot(c, p.at_flops(c), color=color, lw=1.2, label=f"{p.run.params / 1e6:.3g}M")
            ax.scatter(p.run.steps * p.run.flops_per_update, p.run.returns, color=color, s=10)
        ax.plot(fam.envelope.flops, fam.envelope.returns, "k--", lw=2, label="envelope")
        _log_axes(ax)
        ax.set_xlabel("training FLOPs")
        ax.set_ylabel("normalised return")
        ax.set_title(f"{fam.family}: return profiles (eq. 18)")
        handles, labels = ax.get_legend_handles_labels()
        unique = dict(zip(labels, handles))
        ax.legend(unique.values(), unique.keys(), fontsize=6)
    fig.tight_layout()
    return fig


def power_law_figure(result: ScalingResult):
    """N_opt(C) and D_opt(C) of eq. 4 per family: envelope points and the fitted line."""
    plt = _plt()
    fams = list(result.families.values())
    fig, axes = plt.subplots(len(fams), 2, figsize=(9, 3.2 * len(fams)), squeeze=False)
    for row, fam in zip(axes, fams):
        e = fam.envelope
        for ax, law, y, what in ((row[0], fam.n_opt, e.params, "parameters N"),
                                 (row[1], fam.d_opt, e.tokens, "tokens D")):
            if law is None or y is None:
                ax.text(0.5, 0.5, "no tokens in the input", ha="center", transform=ax.transAxes)
                ax.set_axis_off()
                continue
            ax.scatter(e.flops, y, s=8, color="#4c72b0", label="envelope")
            lo, hi = law.ci
            ax.plot(e.flops, law(e.flops), "r--",
                    label=f"exponent {law.exponent:.3f} [{lo:.3f}, {hi:.3f}]")
            _log_axes(ax, y=True)
            ax.set_xlabel("training FLOPs C")
            ax.set_ylabel(what)
            ax.set_title(f"{fam.family}: {what.split()[-1]}_opt = {what.split()[-1]}_0 C^"
                         + ("a" if what.startswith("p") else "b"))
            ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def iso_return_figure(result: ScalingResult):
    """Iso-return contours over (FLOPs, parameters) of every family on one set of axes (Figure
    4): one line style and colour map per family, each contour labelled with its return, and
    each family's N_opt(C) in red in its line style."""
    from matplotlib.lines import Line2D

    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    styles = ["solid", "dashed", "dotted", "dashdot"]
    cmaps = ["viridis", "plasma", "cividis", "magma"]
    handles = []
    for i, fam in enumerate(result.families.values()):
        rows = [r for r in result.contours if r["family"] == fam.family]
        x = np.log10([r["flops"] for r in rows])
        y = np.log10([r["params"] for r in rows])
        z = np.array([r["return"] for r in rows])
        style, cmap = styles[i % len(styles)], plt.get_cmap(cmaps[i % len(cmaps)])
        if len(np.unique(y)) >= 2:
            cs = ax.tricontour(x, y, z, levels=8, cmap=cmap, linestyles=style)
            ax.clabel(cs, fontsize=6, fmt="%.2f")
            handles.append(Line2D([], [], color=cmap(0.5), linestyle=style,
                                  label=f"{fam.family}: iso-return"))
        (line,) = ax.plot(np.log10(fam.envelope.flops), np.log10(fam.n_opt(fam.envelope.flops)),
                          "r", linestyle=style,
                          label=f"{fam.family}: N_opt, a = {fam.n_opt.exponent:.3f}")
        handles.append(line)
    ax.set_xlabel("log10 training FLOPs")
    ax.set_ylabel("log10 parameters")
    ax.set_title("Iso-return contours, " + " vs ".join(result.families) + " overlaid")
    ax.legend(handles=handles, fontsize=7)
    fig.tight_layout()
    return fig
