"""Figures for cards and reports: learning curves, success with CIs, RLFT rounds."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

LOSS_TERMS = ("loss/total", "loss/policy_improvement", "loss/bc", "loss/q")


def learning_curves(history: Sequence[dict[str, float]]) -> Figure:
    """Total loss and each eq. 11 term against the update step."""
    fig, ax = plt.subplots(figsize=(6, 3.2))
    steps = [h.get("step", i) for i, h in enumerate(history)]
    keys = [k for k in LOSS_TERMS if any(k in h for h in history)]
    if not keys:  # fall back to whatever loss-like keys the history has
        keys = sorted({k for h in history for k in h if "loss" in k})
    for key in keys:
        ax.plot(steps, [h.get(key, math.nan) for h in history], label=key.split("/")[-1])
    ax.set_xlabel("update")
    ax.set_ylabel("loss")
    ax.set_title("PAC training loss (eq. 11 terms)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def success_bars(rows: Sequence[dict[str, Any]]) -> Figure:
    """Success rate per task with its Wilson 95% interval (error bars)."""
    tasks = [r for r in rows if r.get("level") == "task"]
    fig, ax = plt.subplots(figsize=(6, 3.2))
    names = [r["name"] for r in tasks]
    rate = [r["success_rate"] for r in tasks]  # percent
    low = [r["success_rate"] - r["success_low"] for r in tasks]
    high = [r["success_high"] - r["success_rate"] for r in tasks]
    ax.bar(names, rate, yerr=[low, high], capsize=4, color="#4c72b0")
    ax.set_ylim(0, 105)
    ax.set_ylabel("success % (Wilson 95% CI)")
    ax.set_title("Simulation evaluation")
    ax.tick_params(axis="x", labelrotation=20, labelsize=7)
    fig.tight_layout()
    return fig


def rlft_rounds(rows: Sequence[dict[str, Any]]) -> Figure:
    """Overall success per RLFT round with Wilson intervals (Table 3 as a plot)."""
    fig, ax = plt.subplots(figsize=(5, 3.2))
    rounds = [r["round"] for r in rows]
    rate = [r["overall"]["rate"] for r in rows]  # percent
    low = [r["overall"]["rate"] - r["overall"]["low"] for r in rows]
    high = [r["overall"]["high"] - r["overall"]["rate"] for r in rows]
    ax.errorbar(rounds, rate, yerr=[low, high], marker="o", capsize=4)
    ax.set_xticks(rounds)
    ax.set_xlabel("RLFT round")
    ax.set_ylabel("success % (Wilson 95% CI)")
    ax.set_ylim(0, 105)
    ax.set_title("Self-improvement rounds")
    fig.tight_layout()
    return fig
