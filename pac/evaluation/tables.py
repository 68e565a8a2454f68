"""The evaluation's records: table rows per task / domain / section, the paper-layout markdown
(Tables 1 / 13), the CSV files and ``metrics.json`` (what `dvc metrics show` reads)."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable
from typing import Any

import numpy as np

from pac.evaluation.stats import Summary, percent_of_expert, summarise
from pac.tasks import TASKS


def horizon_label(horizons: dict[str, int]) -> str:
    """The horizon in one string: ``100`` when every task has it, else ``task=steps,...``."""
    if len(set(horizons.values())) == 1:
        return str(next(iter(horizons.values())))
    return ",".join(f"{t}={n}" for t, n in sorted(horizons.items()))


def _span(steps: set[int]) -> int | str:
    """A row's horizon: the steps of its tasks' episodes, ``low-high`` when they differ."""
    return next(iter(steps)) if len(steps) == 1 else f"{min(steps)}-{max(steps)}"


def _row(section: str, level: str, summary: Summary, refs: dict[str, Any] | None,
         horizon: int | str) -> dict[str, Any]:
    row = {"section": section, "level": level, **summary.as_dict(), "horizon": horizon}
    expert = refs["expert"] if refs else None
    row["expert_return"] = math.nan if expert is None else float(expert)
    row["random_return"] = float(refs["random"]) if refs else math.nan
    return row


def summarise_results(
    results: list[dict[str, Any]], refs: dict[str, dict[str, Any]], held_out: Iterable[str]
) -> list[dict[str, Any]]:
    """Rows of the table: per section (train / held_out), tasks, then domains, then 'all';
    each with the horizon (control steps per episode) its episodes ran over."""
    held_out = set(held_out)
    by_task: dict[str, list[dict[str, Any]]] = {}
    for r in results:
        by_task.setdefault(r["task"], []).append(r)

    def pct(task: str) -> np.ndarray | None:
        ref = refs[task]
        if ref["expert"] is None or ref["expert"] <= ref["random"]:
            return None
        return percent_of_expert([r["return"] for r in by_task[task]], ref["expert"], ref["random"])

    def pooled(name: str, tasks: list[str]) -> Summary:
        pcts = [pct(t) for t in tasks]
        return summarise(
            name,
            [r["return"] for t in tasks for r in by_task[t]],
            None if any(p is None for p in pcts) else np.concatenate(pcts),
            [r["success"] for t in tasks for r in by_task[t]],
            num_tasks=len(tasks),
        )

    def horizon(tasks: list[str]) -> int | str:
        return _span({int(r["horizon"]) for t in tasks for r in by_task[t]})

    rows = []
    for section in ("train", "held_out"):
        tasks = sorted(t for t in by_task if (t in held_out) == (section == "held_out"))
        if not tasks:
            continue
        for t in tasks:
            rows.append(_row(section, "task", pooled(t, [t]), refs[t], horizon([t])))
        domains: dict[str, list[str]] = {}
        for t in tasks:
            domains.setdefault(TASKS[t].domain, []).append(t)
        for domain, dtasks in sorted(domains.items()):
            rows.append(_row(section, "domain", pooled(domain, dtasks), None, horizon(dtasks)))
        rows.append(_row(section, "all", pooled("all", tasks), None, horizon(tasks)))
    return rows


def _ci(mean: float, low: float, high: float) -> str:
    if math.isnan(mean):
        return "N/A"
    if math.isnan(low):
        return f"{mean:.1f}"
    return f"{mean:.1f} [{low:.1f}, {high:.1f}]"


def markdown_table(rows: list[dict[str, Any]], header: str) -> str:
    """Tables in the layout of the paper's Tables 1 / 13: domains first, then tasks."""
    lines = [header, ""]
    cols = ("| {} | #(T) | Episodes | Horizon | Mean return | % of expert [95% CI] |"
            " Success % [Wilson 95%] |")
    for section, title in (("train", "Training tasks"), ("held_out", "Held-out tasks")):
        srows = [r for r in rows if r["section"] == section]
        if not srows:
            continue
        for level, name in (("domain", "Domain"), ("task", "Task")):
            lines += [f"### {title}: per {name.lower()}", "", cols.format(name),
                      "|---|---:|---:|---:|---:|---:|---:|"]
            chosen = [r for r in srows if r["level"] == level]
            if level == "domain":
                chosen += [r for r in srows if r["level"] == "all"]
            for r in chosen:
                label = "**All**" if r["level"] == "all" else r["name"]
                lines.append(
                    f"| {label} | {r['num_tasks']} | {r['episodes']} | {r['horizon']} |"
                    f" {r['mean_return']:.1f} | "
                    f"{_ci(r['pct_expert'], r['pct_expert_low'], r['pct_expert_high'])} | "
                    f"{_ci(r['success_rate'], r['success_low'], r['success_high'])} |"
                )
            lines.append("")
    lines += [
        "% of expert = 100 (R - R_random) / (R_expert - R_random) (Reed et al., 2022), mean over",
        "episodes with a standard-error 95% CI; success rates with Wilson score intervals",
        "(alpha_W = 0.05). N/A: no expert reference for the task (or it is not above random).",
        "Horizon: control steps per episode (the training data's episode length, the",
        "simulator's own (OGBench), or eval.max_steps); the expert and random references run",
        "over the same horizon.",
        "",
    ]
    return "\n".join(lines)


def _csv(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: (repr(v) if isinstance(v, float) else v) for k, v in r.items()})
    return buf.getvalue()


def _finite(value: Any) -> Any:
    """JSON has no NaN: non-finite numbers become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def rounded(values: dict[str, float], digits: int = 4) -> dict[str, float]:
    """Metrics as shown in MLflow: 4 decimals instead of 14-digit binary fractions (76.6667,
    not 76.66666666666667); non-finite values are left for the tracker to skip."""
    return {k: round(float(v), digits) if math.isfinite(float(v)) else float(v)
            for k, v in values.items()}


METRIC_KEYS = ("mean_return", "pct_expert", "pct_expert_low", "pct_expert_high",
               "success_rate", "success_low", "success_high", "episodes")


def metrics_dict(rows: list[dict[str, Any]], timing: dict[str, float]) -> dict[str, Any]:
    """metrics.json: nested {section: {all, domains, tasks}} (what `dvc metrics show` reads)."""
    out: dict[str, Any] = {}
    for r in rows:
        values = {k: _finite(r[k]) for k in METRIC_KEYS}
        section = out.setdefault(r["section"], {})
        if r["level"] == "all":
            section["all"] = values
        else:
            section.setdefault(f"{r['level']}s", {})[r["name"]] = values
    out["timing"] = {k: _finite(v) for k, v in timing.items()}
    return out
