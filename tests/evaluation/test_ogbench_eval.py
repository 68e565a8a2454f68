"""pac.evaluation.ogbench: the benchmark's oracle succeeds through the OGBench harness.

Needs ogbench (``bash benchmarks/ogbench_env.sh``, then ``PYTHONPATH=benchmarks/.ogbench:$PWD``);
skipped with that reason without it.
"""

from __future__ import annotations

import pytest

from pac.data.ogbench import MarkovOraclePolicy, OGBenchMissing, require_ogbench
from pac.evaluation.ogbench import evaluate_ogbench
from pac.evaluation.stats import wilson_interval

try:
    require_ogbench()
    MISSING = ""
except OGBenchMissing as exc:
    MISSING = str(exc)


@pytest.mark.skipif(bool(MISSING), reason=MISSING or "ogbench importable")
def test_the_oracle_scores_100_percent_on_task1():
    result = evaluate_ogbench(lambda env: MarkovOraclePolicy(env, seed=0), ["cube_single.task1"],
                              episodes=5, seed=0)
    (row,) = result.tasks
    assert result.episode_steps == {"cube_single.task1": 200}  # the benchmark's time limit
    assert (row.successes, row.episodes) == (5, 5)
    low, high = wilson_interval(5, 5)
    assert (row.success_low, row.success_high) == pytest.approx((100 * low, 100 * high))
    for ep in result.episodes:
        # success ends the episode early; the reward rates the state before each action
        # ('pre' timing): -1 on every step but the last, whose state is at the goal
        assert ep.success and ep.steps < 200
        assert ep.episode_return == -(ep.steps - 1)
    assert len({ep.seed for ep in result.episodes}) == 5


def test_unknown_tasks_are_refused_before_any_simulation():
    with pytest.raises(ValueError, match="'cube_single.task9' is not an OGBench task"):
        evaluate_ogbench(lambda env: None, ["cube_single.task1", "cube_single.task9"], 1)
    with pytest.raises(ValueError, match="episodes must be a positive integer"):
        evaluate_ogbench(lambda env: None, ["cube_single.task1"], 0)
