"""The champion rule: a candidate takes the registry's `champion` alias only when its success is
higher than the incumbent's beyond sampling noise.

Rule (a choice: the paper hands over no champion): a one-sided two-proportion z-test with the
pooled proportion, on the successes over every evaluated episode of the same tasks,
``z = (p_c - p_i) / sqrt(p (1 - p) (1/n_c + 1/n_i))`` with ``p = (s_c + s_i) / (n_c + n_i)``;
the candidate replaces the incumbent when the one-sided p-value ``P(Z >= z)`` is below 0.05.
Otherwise (a tie, a lead inside the noise, or other tasks) the incumbent stays. 10/10 against
8/10 gives z = 1.49, p = 0.068: the incumbent stays.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

#: One-sided significance level of the rule.
ALPHA = 0.05
RULE = ("replaces the champion only if success over all evaluated episodes (same tasks) is"
        f" higher by a one-sided pooled two-proportion z-test at p < {ALPHA:g}")


def one_sided_p(successes_c: int, n_c: int, successes_i: int, n_i: int) -> tuple[float, float]:
    """(z, one-sided p-value) that the candidate's success rate exceeds the incumbent's.

    Both rates 0 % or both 100 %: no difference to see, z = 0 and p = 0.5."""
    if min(n_c, n_i) <= 0:
        raise ValueError("episodes must be positive for both policies")
    pooled = (successes_c + successes_i) / (n_c + n_i)
    var = pooled * (1 - pooled) * (1 / n_c + 1 / n_i)
    if var == 0:
        return 0.0, 0.5
    z = (successes_c / n_c - successes_i / n_i) / math.sqrt(var)
    return z, 0.5 * math.erfc(z / math.sqrt(2))


@dataclass(frozen=True)
class ChampionDecision:
    """Whether a candidate replaces the incumbent, and the numbers behind it."""

    replaces: bool
    text: str
    z: float = math.nan
    p_value: float = math.nan

    def tags(self) -> dict[str, str]:
        """Registry tags of the candidate's version: the rule and its outcome."""
        return {"pac.champion_rule": RULE, "pac.champion_decision": self.text}


def decide(candidate: tuple[int, int], candidate_tasks: set[str],
           incumbent: tuple[int, int] | None = None, incumbent_tasks: set[str] | None = None,
           incumbent_name: str = "the champion") -> ChampionDecision:
    """Apply :data:`RULE` to (successes, episodes) of a candidate and the incumbent (None: there
    is no champion yet, the candidate takes it)."""
    s_c, n_c = candidate
    if incumbent is None:
        return ChampionDecision(True, f"first evaluated version ({s_c}/{n_c}): champion")
    s_i, n_i = incumbent
    if set(incumbent_tasks or ()) != set(candidate_tasks):
        return ChampionDecision(False, f"evaluated on other tasks than {incumbent_name}:"
                                       " the incumbent stays")
    z, p = one_sided_p(s_c, n_c, s_i, n_i)
    better = p < ALPHA
    verdict = (f"< {ALPHA:g}: replaces {incumbent_name}" if better
               else f">= {ALPHA:g}: {incumbent_name} stays")
    return ChampionDecision(better, f"{s_c}/{n_c} vs {incumbent_name} {s_i}/{n_i}:"
                                    f" z = {z:.2f}, one-sided p = {p:.3f} {verdict}", z, p)
