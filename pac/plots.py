"""Figures for cards, MLflow and DVC: learning curves, success with CIs, RLFT rounds, the
offline evaluation's Q calibration.

Each figure function returns a matplotlib Figure; :func:`write_figures` saves the ones a run
has as PNG files (what ``dvc plots show`` and the MLflow artefact view display).

Learning curves draw one panel per eq. 11 term, each on its own y axis: the total (~180 on the
default run) and the terms (~5-8) on one linear axis made the terms a flat line. A last panel
shows each term's weighted share of the total, (1 - alpha) pi-term, alpha BC and beta Q over
their sum: on the default run beta Q is ~96% of the objective, which the raw curves hide. The
shares use the logged means of alpha and beta per update (exact for constant alpha, beta; the
Q term averages over the transitions with a bootstrap target, so the shares are the terms'
proportions, not an exact decomposition of the logged total).

With evaluation during training (``train.eval_every``), a first panel shows % of expert and
success against updates, so the page says whether training worked, not only that the loss fell.
The Q cross-entropy's expected shape is written under the figure: it keeps falling while the
value distribution sharpens (the target network moves every ``loss.target_update_period``
updates), so a Q curve still falling at the last update means the critic has not converged at
this budget; it is not by itself a sign of a bug.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

#: (metric key, panel title) of the eq. 11 terms, in the order of the equation.
LOSS_TERMS = (
    ("loss/total", "total (eq. 11)"),
    ("loss/policy_improvement", "policy improvement KL"),
    ("loss/bc", "BC (-log pi)"),
    ("loss/q", "Q cross-entropy"),
)
#: Evaluation-during-training metrics (pac.train.periodic_eval): key, label, scale to percent.
EVAL_CURVES = (("eval/return_norm", "% of expert", 100.0), ("eval/success", "success %", 100.0))
#: What the Q cross-entropy is expected to do, shown under the learning curves.
Q_NOTE = ("Q cross-entropy: expected to keep falling while the value distribution sharpens"
          " (targets move every target_update_period updates); still falling at the last update"
          " = critic not converged at this budget.")
#: File names of the figures (stable: DVC `plots:` and MLflow artefact names use them).
FIGURES = {
    "learning_curves": "learning_curves.png",
    "success": "success.png",
    "rlft_rounds": "rlft_rounds.png",
}
#: the data behind two figures, written beside them for `dvc plots show` (dvc.yaml's plots)
PLOT_DATA = {"success": "success.csv", "rlft_rounds": "rlft_rounds.csv"}


def term_shares(entry: dict[str, float]) -> dict[str, float]:
    """Weighted share (percent) of each eq. 11 term in their sum for one logged update."""
    alpha, beta = entry.get("alpha", math.nan), entry.get("beta", math.nan)
    parts = {
        "(1-alpha) pi": (1 - alpha) * entry.get("loss/policy_improvement", 0.0),
        "alpha BC": alpha * entry.get("loss/bc", 0.0),
        "beta Q": beta * entry.get("loss/q", 0.0),
    }
    total = sum(parts.values())
    if not math.isfinite(total) or total <= 0:
        return {k: math.nan for k in parts}
    return {k: 100.0 * v / total for k, v in parts.items()}


def learning_curves(history: Sequence[dict[str, float]]) -> Figure:
    """One panel per eq. 11 term against the update step, and the terms' weighted shares."""
    steps = [h.get("step", i) for i, h in enumerate(history)]
    terms = [(k, title) for k, title in LOSS_TERMS if any(k in h for h in history)]
    if not terms:  # fall back to whatever loss-like keys the history has
        terms = [(k, k) for k in sorted({k for h in history for k in h if "loss" in k})]
    shares = "alpha" in (history[0] if history else {}) and "beta" in history[0]
    evals = [(k, label, scale) for k, label, scale in EVAL_CURVES
             if any(k in h for h in history)]
    panels = len(terms) + int(shares) + int(bool(evals))
    fig, axes = plt.subplots(1, max(panels, 1), figsize=(3.0 * max(panels, 1), 3.3),
                             squeeze=False)
    axes = list(axes[0])
    if evals:  # the return curve first: did training work?
        ax = axes.pop(0)
        for key, label, scale in evals:
            points = [(s, scale * h[key]) for s, h in zip(steps, history) if key in h]
            ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", lw=1,
                    label=label)
        ax.set_ylim(0, 105)
        ax.set_title("evaluation during training", fontsize=9)
        ax.set_xlabel("update", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=7)
    for ax, (key, title) in zip(axes, terms):
        ax.plot(steps, [h.get(key, math.nan) for h in history], marker=".", lw=1)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("update", fontsize=8)
        ax.tick_params(labelsize=7)
    if shares:
        ax = axes[len(terms)]
        per_step = [term_shares(h) for h in history]
        for name in per_step[0]:
            ax.plot(steps, [s[name] for s in per_step], label=name, lw=1)
        ax.set_ylim(0, 100)
        ax.set_title("weighted share of total (%)", fontsize=9)
        ax.set_xlabel("update", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=7)
    fig.suptitle("PAC training: " + ("evaluation and " if evals else "")
                 + "loss, eq. 11 terms", fontsize=10)
    if any(k == "loss/q" for k, _ in terms):
        fig.text(0.5, 0.01, Q_NOTE, ha="center", fontsize=7, wrap=True)
        fig.tight_layout(rect=(0, 0.06, 1, 1))
    else:
        fig.tight_layout()
    return fig


def success_bars(rows: Sequence[dict[str, Any]]) -> Figure:
    """Success rate per task with its Wilson 95% interval and the episode counts."""
    tasks = [r for r in rows if r.get("level") == "task"]
    fig, ax = plt.subplots(figsize=(max(5.5, 1.6 * len(tasks) + 1.5), 3.4))
    names = [r["name"] for r in tasks]
    rate = [float(r["success_rate"]) for r in tasks]  # percent
    low = [float(r["success_rate"]) - float(r["success_low"]) for r in tasks]
    high = [float(r["success_high"]) - float(r["success_rate"]) for r in tasks]
    bars = ax.bar(names, rate, yerr=[low, high], capsize=4, color="#4c72b0")
    for bar, r in zip(bars, tasks):
        successes = int(round(float(r["successes"]))) if "successes" in r else None
        label = f"{successes}/{int(r['episodes'])}" if successes is not None \
            else f"n={int(r['episodes'])}"
        ax.annotate(label, (bar.get_x() + bar.get_width() / 2, 2), ha="center", fontsize=8,
                    color="white" if bar.get_height() > 10 else "black")
    ax.set_ylim(0, 105)
    ax.set_ylabel("success % (Wilson 95% CI)")
    ax.set_title("Simulation evaluation (label: successes/episodes)", fontsize=10)
    ax.tick_params(axis="x", labelrotation=20, labelsize=7)
    fig.tight_layout()
    return fig


def rlft_rounds(rows: Sequence[dict[str, Any]], champion: int | None = None,
                control: Sequence[dict[str, Any]] | None = None) -> Figure:
    """Overall success per RLFT round with Wilson intervals (Table 3 as a plot); the champion
    round is marked with a star, a control arm (same rounds, no rollouts) drawn dashed."""
    fig, ax = plt.subplots(figsize=(5, 3.4))

    def draw(these: Sequence[dict[str, Any]], label: str, style: str) -> None:
        rounds = [r["round"] for r in these]
        rate = [r["overall"]["rate"] for r in these]  # percent
        low = [r["overall"]["rate"] - r["overall"]["low"] for r in these]
        high = [r["overall"]["high"] - r["overall"]["rate"] for r in these]
        ax.errorbar(rounds, rate, yerr=[low, high], marker="o", capsize=4, ls=style,
                    label=label)

    draw(rows, "PAC + RLFT", "-")
    if control:
        draw(control, "control (no rollouts)", "--")
    if champion is not None:
        best = next(r for r in rows if r["round"] == champion)
        ax.plot([champion], [best["overall"]["rate"]], marker="*", ms=18, color="#dd8452",
                ls="none", label=f"champion (round {champion})", zorder=5)
    ax.set_xticks([r["round"] for r in rows])
    ax.set_xlabel("RLFT round (0 = pretrained)")
    ax.set_ylabel("success % (Wilson 95% CI)")
    ax.set_ylim(0, 105)
    ax.set_title("Self-improvement rounds")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def offline_calibration(calibration: dict[str, Sequence[dict[str, float]]]) -> Figure:
    """Offline evaluation: per task, binned mean Q against the mean Monte-Carlo return of the
    held-out steps (pac.evaluation.offline.calibration); a calibrated critic lies on y = x."""
    fig, ax = plt.subplots(figsize=(4.6, 4.0))
    values: list[float] = []
    for task, rows in calibration.items():
        q = [float(r["q_mean"]) for r in rows]
        ret = [float(r["return_mean"]) for r in rows]
        values += q + ret
        ax.plot(q, ret, "o-", label=f"{task} (n={int(sum(r['count'] for r in rows))})",
                markersize=4)
    if values:
        lo, hi = min(values), max(values)
        pad = 0.05 * (hi - lo) or 0.5
        ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], ":", color="grey", label="y = x")
    ax.set_xlabel("mean Q(s, a) of the data action (bin)")
    ax.set_ylabel("mean discounted return of the data")
    ax.set_title("Offline evaluation: Q calibration (held-out episodes)", fontsize=10)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def write_figures(
    out_dir: str | Path,
    history: Sequence[dict[str, float]] = (),
    eval_rows: Sequence[dict[str, Any]] = (),
    rlft_rows: Sequence[dict[str, Any]] = (),
    champion: int | None = None,
) -> dict[str, Path]:
    """Save the figures the inputs allow as PNGs in `out_dir`; returns name -> path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    figures: dict[str, Figure] = {}
    if history:
        figures["learning_curves"] = learning_curves(history)
    if any(r.get("level") == "task" for r in eval_rows):
        figures["success"] = success_bars(eval_rows)
    if rlft_rows:
        figures["rlft_rounds"] = rlft_rounds(rlft_rows, champion)
    from pac.io import atomic_write_csv

    if "success" in figures:
        atomic_write_csv(out / PLOT_DATA["success"], [
            {"name": r["name"], "success_rate": r["success_rate"]}
            for r in eval_rows if r.get("level") == "task"])
    if "rlft_rounds" in figures:
        atomic_write_csv(out / PLOT_DATA["rlft_rounds"], [
            {"round": r["round"], "all_success": r["overall"]["rate"]} for r in rlft_rows])
    paths = {}
    for name, fig in figures.items():
        path = out / FIGURES[name]
        tmp = path.with_name(f".{path.name}.tmp.png")  # atomic: a reader never sees half a PNG
        fig.savefig(tmp, dpi=110)
        tmp.replace(path)
        plt.close(fig)
        paths[name] = path
    return paths

