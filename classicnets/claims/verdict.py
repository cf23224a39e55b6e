"""Verdicts from means and spreads over seeds: the one place where "A beats B" is decided.

A comparison is paired by seed (both twins of a seed start from the same weights and read the same batches),
so the noise that matters is the spread of the per-seed differences. ``d_i = worse_i - better_i`` for a claim
"better beats worse" measured as an error (lower is better):

* **clear**: every seed agrees (all d_i > 0) and the mean difference is at least twice its standard error
  (with 3 seeds: a t of 2; one seed can never be clear).
* **tied**: the mean difference is within two standard errors of zero, or smaller than ``resolution`` (the
  smallest difference the test set can show: one test image).
* otherwise **mixed**.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass


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

    def clear(self) -> bool:
        """Every seed agrees and the mean is >= 2 standard errors above zero (never with one seed)."""
        return self.n > 1 and self.wins == self.n and self.mean >= 2 * self.se and self.mean > self.resolution

    def clear_opposite(self) -> bool:
        return Paired(tuple(-d for d in self.diffs), self.resolution).clear()

    def tied(self) -> bool:
        """No difference the seeds can resolve: |mean| < 2 se, or below the measurement's resolution."""
        if abs(self.mean) <= self.resolution:
            return True
        return self.n > 1 and abs(self.mean) < 2 * self.se

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


def pct(value: float) -> str:
    return f"{100 * value:.2f}%"


def pct_sd(values: list[float]) -> str:
    """``12.34% ± 0.56`` (mean ± sd over seeds, in points)."""
    m, s = mean_sd(values)
    return f"{100 * m:.2f}%" + ("" if math.isnan(s) else f" ± {100 * s:.2f}")
