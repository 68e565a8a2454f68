"""The champion rule (pac.review.champion) against hand-computed two-proportion z-tests."""

import math

import pytest

from pac.review.champion import RULE, decide, one_sided_p

TASKS = {"point_mass.easy", "cartpole.balance"}


def test_ten_of_ten_against_eight_of_ten_is_noise():
    # pooled p = 18/20 = 0.9; z = 0.2 / sqrt(0.9 * 0.1 * (1/10 + 1/10)) = 1.4907;
    # standard normal upper tail at 1.4907 (table): 0.0680
    z, p = one_sided_p(10, 10, 8, 10)
    assert z == pytest.approx(0.2 / math.sqrt(0.9 * 0.1 * 0.2), rel=1e-12)
    assert z == pytest.approx(1.4907, abs=1e-4) and p == pytest.approx(0.0680, abs=5e-4)
    got = decide((10, 10), TASKS, (8, 10), TASKS, "v1")
    assert not got.replaces
    assert got.text == "10/10 vs v1 8/10: z = 1.49, one-sided p = 0.068 >= 0.05: v1 stays"
    assert got.tags() == {"pac.champion_rule": RULE, "pac.champion_decision": got.text}


def test_a_clearly_better_candidate_replaces():
    # 20/20 vs 5/20: pooled 0.625, z = 0.75 / sqrt(0.625 * 0.375 * 0.1) = 4.899; tail < 1e-6
    got = decide((20, 20), TASKS, (5, 20), TASKS, "v1")
    assert got.replaces and got.z == pytest.approx(4.899, abs=1e-3) and got.p_value < 1e-6


def test_ties_other_tasks_and_no_incumbent():
    assert one_sided_p(10, 10, 10, 10) == (0.0, 0.5)  # both 100 %: nothing to see
    assert not decide((10, 10), TASKS, (10, 10), TASKS).replaces
    assert not decide((20, 20), {"reacher.easy"}, (0, 20), TASKS).replaces
    assert decide((0, 10), TASKS).replaces  # the first version takes the alias
    with pytest.raises(ValueError, match="episodes must be positive"):
        one_sided_p(1, 0, 1, 1)
