"""Verdicts from means and spreads over seeds: the one place where "A beats B" is decided.

A comparison is paired by seed (both twins of a seed start from the same weights and read the same batches),
so the noise that matters is the spread of the per-seed differences. ``d_i = worse_i - better_i`` for a claim
"better beats worse" measured as an error (lower is better), and with ``t`` the one-sided 95% quantile of
Student's t with n - 1 degrees of freedom (2.92 for 3 seeds):

* **clear**: every seed agrees and the lower confidence bound ``mean - t * se`` is above zero (and above
  ``resolution``, the smallest difference the test set can show: one image). One seed is never clear.
* **at most m**: the upper bound ``mean + t * se`` is below ``m``: the data rule out an advantage of ``m`` or
  more. This is how "X does not help" or "A is as good as B" is shown, never by a mere lack of a clear
  difference (which only says the run could not tell).

The decisions each claim makes from these (``order``, ``no_gain``, ``beats``, ...) are pure functions here,
so every branch is tested with numbers (tests/test_claims.py).
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

from .registry import FALSE, HOLDS, NOT_AT_BUDGET, PARTLY

# one-sided 95% quantiles of Student's t by degrees of freedom (n - 1); beyond 10, 1.8 (1.81 at 10, 1.645 at inf)
T95 = {1: 6.314, 2: 2.920, 3: 2.353, 4: 2.132, 5: 2.015, 6: 1.943, 7: 1.895, 8: 1.860, 9: 1.833, 10: 1.812}
MARGIN = 0.01  # one point of error: the smallest effect the claims care about ("does not help" = less than this)


def t95(df: int) -> float:
    return T95.get(df, 1.8)


@dataclass(frozen=True)
class Paired:
    """The per-seed differences ``worse - better`` of one metric (an error: lower is better)."""

    diffs: tuple[float, ...]
    resolution: float = 0.0

    @property
    def n(self) -> int:
        return len(self.diffs)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.diffs)

    @property
    def sd(self) -> float:
        return statistics.stdev(self.diffs) if self.n > 1 else math.nan

    @property
    def se(self) -> float:
        return self.sd / math.sqrt(self.n) if self.n > 1 else math.nan

    @property
    def wins(self) -> int:
        """Seeds in which the claimed-better side was better."""
        return sum(1 for d in self.diffs if d > 0)

    @property
    def t(self) -> float:
        return t95(self.n - 1) if self.n > 1 else math.inf

    def lower(self) -> float:
        """The one-sided 95% lower bound of the mean difference (-inf with one seed)."""
        return self.mean - self.t * self.se if self.n > 1 else -math.inf

    def upper(self) -> float:
        return self.mean + self.t * self.se if self.n > 1 else math.inf

    def clear(self) -> bool:
        """Every seed agrees and the lower bound is above zero and above the resolution (never with one seed)."""
        return self.n > 1 and self.wins == self.n and self.lower() > max(0.0, self.resolution)

    def clear_opposite(self) -> bool:
        return self.flipped().clear()

    def flipped(self) -> "Paired":
        return Paired(tuple(-d for d in self.diffs), self.resolution)

    def at_most(self, margin: float = MARGIN) -> bool:
        """The data rule out an advantage of ``margin`` or more (upper bound below it)."""
        return self.upper() < margin

    def state(self) -> str:
        if self.clear():
            return "clear"
        if self.clear_opposite():
            return "clearly reversed"
        return "no clear difference"

    def text(self, unit: str = " points", scale: float = 100.0) -> str:
        """``+1.23 points (sd 0.40, 3/3 seeds)``."""
        sd = "" if self.n < 2 else f"sd {self.sd * scale:.2f}, "
        return f"{self.mean * scale:+.2f}{unit} ({sd}{self.wins}/{self.n} seeds)"


def paired(worse: list[float], better: list[float], resolution: float = 0.0) -> Paired:
    """Pair two per-seed lists (same seed order) as ``worse - better``."""
    if len(worse) != len(better) or not worse:
        raise ValueError(f"paired values need the same non-zero number of seeds, got {len(worse)} and {len(better)}")
    return Paired(tuple(w - b for w, b in zip(worse, better)), resolution)


def mean_sd(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else math.nan)


def pct_sd(values: list[float]) -> str:
    """``12.34% ± 0.56`` (mean ± sd over seeds, in points)."""
    m, s = mean_sd(values)
    return f"{100 * m:.2f}%" + ("" if math.isnan(s) else f" ± {100 * s:.2f}")


# ------------------------------------------------------------------------------------------ decisions
def order(parts: dict[str, Paired], learned: bool) -> str:
    """Claims of the form "A beats B (and B beats C)": every part clear -> holds; any part clearly reversed ->
    false; some clear -> holds partly; else not at this budget. Nets that learned nothing decide nothing."""
    if not learned:
        return NOT_AT_BUDGET
    if all(p.clear() for p in parts.values()):
        return HOLDS
    if any(p.clear_opposite() for p in parts.values()):
        return FALSE
    return PARTLY if any(p.clear() for p in parts.values()) else NOT_AT_BUDGET


def no_gain(gains: dict[str, Paired], learned: bool, margin: float = MARGIN) -> str:
    """Claims "X does not help": ``gains`` are X's advantages (> 0: X better). Every gain ruled out above
    ``margin`` -> holds; X clearly helps everywhere -> false; a mix of those -> holds partly (the reading
    says where); nothing shown -> not at this budget."""
    if not learned:
        return NOT_AT_BUDGET
    none = [p.at_most(margin) for p in gains.values()]
    helps = [p.clear() for p in gains.values()]
    if all(none):
        return HOLDS
    if all(helps):
        return FALSE
    return PARTLY if any(none) or any(helps) else NOT_AT_BUDGET


def beats(gain: Paired, learned: bool, margin: float = MARGIN) -> str:
    """Claims "A beats B" where "as good" is a partial win: clear -> holds; A's disadvantage ruled out above
    ``margin`` -> holds partly; clearly reversed -> false; else not at this budget."""
    if not learned:
        return NOT_AT_BUDGET
    if gain.clear():
        return HOLDS
    if gain.clear_opposite():
        return FALSE
    return PARTLY if gain.flipped().at_most(margin) else NOT_AT_BUDGET


def saturates(first: Paired, last: Paired, learned: bool, margin: float = MARGIN) -> str:
    """Claims "deeper helps, then stops helping": ``first`` the gain of the middle depth over the shallowest,
    ``last`` the gain of the deepest over the middle. Both shown -> holds; deeper clearly worse -> false; one
    shown -> holds partly; else not at this budget."""
    if not learned:
        return NOT_AT_BUDGET
    helps = first.clear()
    stops = last.at_most(max(margin, first.mean / 3)) if helps else last.at_most(margin)
    if helps and stops:
        return HOLDS
    if first.clear_opposite():
        return FALSE
    return PARTLY if helps or stops else NOT_AT_BUDGET


def marginal(gain: Paired, learned: bool, margin: float = MARGIN) -> tuple[str, str]:
    """Shortcut B vs A: "B is marginally better; A is enough". Returns (verdict, why)."""
    if not learned:
        return NOT_AT_BUDGET, "some runs did not learn beyond chance"
    if gain.clear() and gain.upper() < 2 * margin:
        return HOLDS, "B is better in every seed, by little"
    if gain.clear():
        return PARTLY, "B is clearly better, by more than a marginal amount: A is not quite enough"
    if gain.clear_opposite():
        return PARTLY, "A is enough (it is even better here); B's edge does not show"
    if abs(gain.mean) < margin and gain.at_most(2 * margin) and gain.flipped().at_most(2 * margin):
        return PARTLY, "A is enough (the two are within two points); B's small edge is not resolved"
    return NOT_AT_BUDGET, "the seeds cannot tell A and B apart at this budget"


def fewer_seeds(verdict: str, seeds: int) -> str:
    """Verdicts need >= 3 seeds: with fewer, any verdict becomes 'does not hold at this budget'."""
    return verdict if seeds >= 3 else NOT_AT_BUDGET
