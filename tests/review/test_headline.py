"""The headline of a handed-over pretrained policy covers every task of the flow's evaluation."""

import math

import pytest

from pac.pipeline import all_task_row, headline
from pac.rlft.rounds import RoundRow, success_cell


def _eval_rows():
    """Per-task rows and the 'all' row as pac.evaluation writes them (3 tasks x 10 episodes)."""
    tasks = {"point_mass.easy": 10, "cartpole.balance": 10, "reacher.easy": 3}
    rows = [{"section": "train", "level": "task", "name": t, "successes": s, "episodes": 10}
            for t, s in tasks.items()]
    rows.append({"section": "train", "level": "all", "name": "all", "successes": 23,
                 "episodes": 30, "mean_return": 50.0, "pct_expert": 68.8,
                 "pct_expert_low": 60.1, "pct_expert_high": 77.5})
    return rows


def test_a_pretrained_champion_is_headlined_over_all_tasks_not_the_rlft_task():
    only = success_cell(10, 10)
    round0 = RoundRow(round=0, episodes_added=0, rollout_episodes=0, collected_success=math.nan,
                      tasks={"point_mass.easy": only}, overall=only, policy="p", champion=True,
                      pct_expert={"rate": 70.0, "low": 65.0, "high": 75.0}, model_version="1")
    head = all_task_row(round0, _eval_rows())
    # Wilson 95% of 23/30 by hand: centre (0.7667 + 1.9208/30) / 1.128 = 0.7365,
    # half 1.96 / 1.128 * sqrt(0.7667 * 0.2333 / 30 + 3.8415 / 3600) = 0.1458
    assert head.overall["rate"] == pytest.approx(100 * 23 / 30)
    assert (head.overall["low"], head.overall["high"]) == pytest.approx((59.07, 88.21), abs=0.02)
    assert head.model_version == "1" and set(head.tasks) == {
        "point_mass.easy", "cartpole.balance", "reacher.easy"}
    cells = headline(head)
    assert cells["success % [Wilson 95%], all evaluated tasks"] == \
        "76.7 [59.1, 88.2] (23/30 episodes)"
    assert cells["% of expert [SE 95% CI], all evaluated tasks"] == "68.8 [60.1, 77.5]"
    later = RoundRow(round=1, episodes_added=10, rollout_episodes=10, collected_success=0.5,
                     tasks={"point_mass.easy": only}, overall=only, policy="q")
    assert all_task_row(later, _eval_rows()) is later  # evaluated on rlft.tasks only
