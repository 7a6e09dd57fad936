"""Wall-clock and monotonic time in the units the gateway uses.

Freshness and envelope timestamps are Unix epoch milliseconds (wall clock); cache and replay
expiry use the monotonic clock so a wall-clock step cannot resurrect or expire entries early.
"""

from __future__ import annotations

import time

__all__ = ("monotonic_ms", "now_ms")


def now_ms() -> int:
    """Unix epoch milliseconds (the envelope clock)."""
    return time.time_ns() // 1_000_000


def monotonic_ms() -> float:
    """Milliseconds of a clock that never goes backwards (expiry bookkeeping)."""
    return time.monotonic() * 1000.0
