"""PAC beside behaviour cloning (``eval.bc_baseline``): does RL help on this data?

With ``eval.bc_baseline: true`` the flow trains a BC arm beside PAC (``loss.variant=bc``: the
BC term of eq. 11 alone, on the same data, budget, seed and evaluation; one more branch of the
evaluation ``foreach``). This module tabulates both arms per task with intervals and decides
which policy is handed over: PAC, unless BC's success over all evaluated episodes is higher
beyond noise by the champion rule of :mod:`pac.review.champion` (one-sided two-proportion
z-test, p < 0.05). The table and the reason go to the model card and the run's review.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pac.review.champion import decide

#: the evaluation branch and output folder name of the BC arm
BC_ARM = "bc"


@dataclass
class ArmsReview:
    """The two arms side by side and the hand-over decision."""

    table: str  # markdown: one row per task and one for all tasks
    handed_over: str  # "PAC" or "BC"
    reason: str  # one line: the counts, z and p behind the decision

    def tags(self) -> dict[str, str]:
        return {"pac.handed_over_arm": self.handed_over, "pac.arms_decision": self.reason}


def _cells(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """name -> row of the task rows and the all-task row ("all") of the training section."""
    out = {r["name"]: r for r in rows if r.get("section") == "train" and r.get("level") == "task"}
    every = next((r for r in rows if r.get("section") == "train" and r.get("level") == "all"),
                 None)
    if every is None:
        raise ValueError("an arm's evaluation has no 'all' row of training tasks")
    out["all"] = every
    return out


def _success(row: dict[str, Any]) -> str:
    from pac.rlft.rounds import format_cell, success_cell

    s, n = int(row["successes"]), int(row["episodes"])
    return f"{format_cell(success_cell(s, n))} ({s}/{n})"


def _pct(row: dict[str, Any]) -> str:
    from pac.rlft.rounds import format_pct

    return format_pct({"rate": row.get("pct_expert"), "low": row.get("pct_expert_low"),
                       "high": row.get("pct_expert_high")})


def review_arms(pac_rows: list[dict[str, Any]], bc_rows: list[dict[str, Any]]) -> ArmsReview:
    """PAC's and BC's evaluation rows (``merge_evaluations`` / ``evaluate`` rows) side by side;
    BC is handed over only when it beats PAC beyond noise over all evaluated episodes."""
    pac, bc = _cells(pac_rows), _cells(bc_rows)
    tasks = sorted(set(pac) - {"all"})
    if sorted(set(bc) - {"all"}) != tasks:
        raise ValueError(f"the arms were evaluated on different tasks: PAC {tasks},"
                         f" BC {sorted(set(bc) - {'all'})}")
    lines = [
        "| task | PAC success % [Wilson 95%] | BC success % [Wilson 95%] |"
        " PAC % of expert [95% CI] | BC % of expert [95% CI] |",
        "|---|---|---|---|---|",
    ]
    for name in [*tasks, "all"]:
        lines.append(f"| {name if name != 'all' else '**all tasks**'} | {_success(pac[name])} |"
                     f" {_success(bc[name])} | {_pct(pac[name])} | {_pct(bc[name])} |")
    count = (lambda r: (int(r["successes"]), int(r["episodes"])))  # noqa: E731
    decision = decide(count(bc["all"]), set(tasks), count(pac["all"]), set(tasks),
                      incumbent_name="PAC")
    handed = "BC" if decision.replaces else "PAC"
    return ArmsReview("\n".join(lines), handed, f"{handed} handed over: BC {decision.text}")


def arms_markdown(review: ArmsReview) -> str:
    """The review's section: the table and the decision."""
    return (f"## PAC beside BC (does RL help on this data?)\n\n{review.table}\n\n"
            f"**{review.reason}.** BC: `loss.variant=bc` on the same data, budget, seed and"
            " evaluation (`eval.bc_baseline`).\n")
