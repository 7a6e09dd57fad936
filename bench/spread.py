"""Per-round figures and their spread: what every budget of ``make bench`` is decided on.

A benchmark measures the subject and its baseline in the same round, one right after the other,
over several alternating rounds; each round gives one ratio, and the budget is checked against
the median of those ratios. The minimum and maximum are printed beside it, so a reader sees at
once whether the figure is steady or whether the machine was noisy that day.
"""

from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Sequence

__all__ = ("Spread",)


@dataclasses.dataclass(frozen=True, slots=True)
class Spread:
    median: float
    low: float
    high: float
    values: tuple[float, ...]

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        if not values:
            raise ValueError("a spread needs at least one value")
        return cls(statistics.median(values), min(values), max(values), tuple(values))

    @classmethod
    def ratios(cls, subjects: Sequence[float], baselines: Sequence[float]) -> Spread:
        """The spread of ``subject / baseline`` taken round by round."""
        return cls.of([s / b for s, b in zip(subjects, baselines, strict=True)])

    def show(self, digits: int = 2) -> str:
        """``1.23 [1.10-1.31]``: median, then minimum and maximum over the rounds."""
        return f"{self.median:.{digits}f} [{self.low:.{digits}f}-{self.high:.{digits}f}]"

    def as_json(self) -> dict[str, object]:
        return {"median": self.median, "min": self.low, "max": self.high, "rounds": list(self.values)}
