"""The pure arithmetic of an open-loop run: when each request is due, and what its latency is.

Kept apart from the sockets so it can be tested (tests/test_latency_math.py). Latency is counted
from the *scheduled* send time, not from the moment the request actually left: when the load
generator falls behind its schedule (a slow answer, a late timer), that lateness is part of what a
client sending at this rate would have waited, and leaving it out is coordinated omission.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ("latencies", "percentile", "send_times", "summarize")


def send_times(rate: float, count: int, start: float = 0.0) -> list[float]:
    """Scheduled send time of each of ``count`` requests at ``rate`` per second, fixed in advance."""
    if rate <= 0:
        raise ValueError(f"rate must be positive, got {rate}")
    return [start + i / rate for i in range(count)]


def latencies(scheduled: Sequence[float], answered: Sequence[float]) -> list[float]:
    """Each request's latency: its answer's time minus its *scheduled* send time."""
    if len(scheduled) != len(answered):
        raise ValueError("one answer time per scheduled request")
    return [done - due for due, done in zip(scheduled, answered, strict=True)]


def percentile(ordered: Sequence[float], q: float) -> float:
    """The nearest-rank ``q``-th percentile of ``ordered`` (sorted ascending): a value that was measured.

    Nearest rank never interpolates, so p99.9 of 1,000 samples is the 999th smallest, and with
    fewer than 1,000 samples it is the largest: a tail figure is never made better than a sample.
    """
    if not ordered:
        raise ValueError("no samples")
    if not 0 < q <= 100:
        raise ValueError(f"q must be in (0, 100], got {q}")
    rank = math.ceil(round(q / 100 * len(ordered), 9))  # round: 99.9/100*1000 is 999.0000000000001
    return ordered[max(rank, 1) - 1]


def summarize(latencies_s: Sequence[float]) -> dict[str, float]:
    """p50, p99, p99.9 and the maximum, in milliseconds."""
    ordered = sorted(latencies_s)
    return {
        "p50_ms": percentile(ordered, 50) * 1e3,
        "p99_ms": percentile(ordered, 99) * 1e3,
        "p999_ms": percentile(ordered, 99.9) * 1e3,
        "max_ms": ordered[-1] * 1e3,
    }
