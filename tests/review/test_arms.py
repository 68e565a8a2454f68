"""PAC beside BC (pac.review.arms): the side-by-side table and the hand-over rule, against
Wilson intervals and z statistics computed by hand."""

from __future__ import annotations

import pytest

from pac.config import load_config
from pac.pipeline import bc_arm_config
from pac.review.arms import arms_markdown, review_arms


def _rows(cells: dict[str, tuple[int, int]], pct: float = 50.0) -> list[dict]:
    rows = [{"name": t, "section": "train", "level": "task", "successes": s, "episodes": n,
             "pct_expert": pct, "pct_expert_low": pct - 5, "pct_expert_high": pct + 5}
            for t, (s, n) in cells.items()]
    s_all = sum(s for s, _ in cells.values())
    n_all = sum(n for _, n in cells.values())
    rows.append({"name": "all", "section": "train", "level": "all", "successes": s_all,
                 "episodes": n_all, "pct_expert": pct, "pct_expert_low": pct - 5,
                 "pct_expert_high": pct + 5})
    return rows


def test_bc_better_by_noise_only_leaves_pac_handed_over():
    # BC 10/10 vs PAC 8/10: pooled 0.9, se = sqrt(0.9 * 0.1 * 2 / 10) = 0.13416,
    # z = 0.2 / 0.13416 = 1.49, one-sided p = 0.068 >= 0.05
    review = review_arms(_rows({"a.x": (4, 5), "b.y": (4, 5)}),
                         _rows({"a.x": (5, 5), "b.y": (5, 5)}))
    assert review.handed_over == "PAC"
    assert review.reason == ("PAC handed over: BC 10/10 vs PAC 8/10: z = 1.49, one-sided"
                             " p = 0.068 >= 0.05: PAC stays")
    # Wilson 95% of 8/10 by hand: centre (0.8 + 1.9208 / 10) / 1.38415 = 0.71674,
    # half 1.96 / 1.38415 * sqrt(0.016 + 0.0096037) = 0.22658 -> [49.0, 94.3]
    all_row = review.table.splitlines()[-1]
    assert all_row.startswith("| **all tasks** | 80.0 [49.0, 94.3] (8/10) | 100.0 [")
    assert len(review.table.splitlines()) == 2 + 3  # header, rule, two tasks, all
    assert review.tags() == {"pac.handed_over_arm": "PAC", "pac.arms_decision": review.reason}
    assert "## PAC beside BC" in arms_markdown(review)


def test_bc_clearly_better_is_handed_over():
    # BC 15/20 vs PAC 2/20: pooled 0.425, se = sqrt(0.425 * 0.575 * 0.1) = 0.15633,
    # z = 0.65 / 0.15633 = 4.16, one-sided p = 1.6e-5
    review = review_arms(_rows({"a.x": (2, 20)}), _rows({"a.x": (15, 20)}))
    assert review.handed_over == "BC"
    assert review.reason.startswith("BC handed over: BC 15/20 vs PAC 2/20: z = 4.16,"
                                    " one-sided p = 0.000 < 0.05")


def test_arms_on_other_tasks_are_refused():
    with pytest.raises(ValueError, match="different tasks"):
        review_arms(_rows({"a.x": (2, 20)}), _rows({"b.y": (15, 20)}))


def test_the_bc_arm_is_pac_settings_with_the_bc_term_alone_in_its_own_folders():
    cfg = load_config(overrides=["loss.alpha=0.5", "train.steps=77"])
    cfg.data.groups[0].alpha, cfg.data.groups[0].beta = 0.3, 2.0  # alpha-PAC's per-group values
    bc = bc_arm_config(cfg)
    assert (bc.loss.variant, bc.loss.alpha, bc.loss.beta) == ("bc", 1.0, 0.0)
    assert all(g.alpha is None and g.beta is None for g in bc.data.groups)
    assert bc.train.out_dir != cfg.train.out_dir and bc.eval.out_dir != cfg.eval.out_dir
    # everything else as PAC's: data, budget, seed, model, evaluation
    for section in ("model", "train", "eval"):
        ours, theirs = getattr(cfg, section).__dict__, getattr(bc, section).__dict__
        assert {k: v for k, v in ours.items() if k != "out_dir"} == \
            {k: v for k, v in theirs.items() if k != "out_dir"}, section
    assert [(g.name, g.tasks, g.quality) for g in bc.data.groups] == \
        [(g.name, g.tasks, g.quality) for g in cfg.data.groups]
