"""Command budgets, request-flow step 7: per client IP, device session, user, and
(user, message type).

Each budget is a GCRA limiter (the token bucket as one timestamp per key): ``rate`` requests per
second sustained, ``burst`` at once. A request is charged to all four budgets only when all four
admit it, so a refused request costs nothing; the refusal carries the longest wait as
``retry_after_ms`` (sent to the client as ``google.rpc.RetryInfo``).

Memory is bounded per budget: keys are kept least-recently-charged first and the oldest is
dropped beyond ``max_keys``. Dropping a key forgets its debt, which only ever lets a request
through earlier; it never refuses one that would have passed.
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from collections.abc import Callable

from edgeward.clock import monotonic_ms
from edgeward.reasons import Reason, Rejection

__all__ = ("Budget", "CommandBudgets", "Limit", "parse_limit")


@dataclasses.dataclass(frozen=True, slots=True)
class Limit:
    rate_per_s: float
    burst: int

    def __str__(self) -> str:
        return f"{self.rate_per_s:g}:{self.burst}"


def parse_limit(text: str) -> Limit | None:
    """``"RATE:BURST"`` (requests per second, requests at once), or ``off``."""
    if text.strip().lower() == "off":
        return None
    rate_text, sep, burst_text = text.partition(":")
    try:
        rate, burst = float(rate_text), int(burst_text) if sep else 0
    except ValueError:
        raise ValueError("expected RATE:BURST (e.g. 50:100) or off") from None
    if not sep or rate <= 0 or burst < 1:
        raise ValueError("expected RATE:BURST with RATE > 0 and BURST >= 1, or off")
    return Limit(rate, burst)


class Budget:
    """One GCRA limiter over many keys."""

    __slots__ = ("_interval_ms", "_max_keys", "_tat", "_tolerance_ms", "name")

    def __init__(self, name: str, limit: Limit, max_keys: int = 100_000) -> None:
        self.name = name
        self._interval_ms = 1000.0 / limit.rate_per_s
        self._tolerance_ms = self._interval_ms * limit.burst
        self._max_keys = max_keys
        self._tat: OrderedDict[str, float] = OrderedDict()  # key -> theoretical arrival time

    def wait_ms(self, key: str, now: float) -> tuple[float, float]:
        """(how long the request must wait, the key's next arrival time if it is admitted now)."""
        new_tat = max(self._tat.get(key, now), now) + self._interval_ms
        return max(0.0, new_tat - self._tolerance_ms - now), new_tat

    def charge(self, key: str, new_tat: float) -> None:
        self._tat[key] = new_tat
        self._tat.move_to_end(key)
        if len(self._tat) > self._max_keys:
            self._tat.popitem(last=False)


class CommandBudgets:
    # Which of charge()'s keys each budget counts: (name, index into the keys tuple).
    _KEYS = (("ip", 0), ("session", 1), ("user", 2), ("message_type", 3))

    def __init__(
        self,
        *,
        ip: Limit | None,
        session: Limit | None,
        user: Limit | None,
        message_type: Limit | None,
        clock: Callable[[], float] = monotonic_ms,
    ) -> None:
        limits = {"ip": ip, "session": session, "user": user, "message_type": message_type}
        self._budgets = tuple(
            (Budget(name, limit), index) for name, index in self._KEYS if (limit := limits[name]) is not None
        )
        self._clock = clock

    def charge(self, client_ip: str, device_session_id: str, user_id: str, message_type: str) -> None:
        """Admit the request against every budget, or raise rate_limited naming the tightest one."""
        if not self._budgets:
            return
        keys = (client_ip, device_session_id, user_id, f"{user_id}\x00{message_type}")
        now = self._clock()
        tats = []
        worst_wait, worst = 0.0, ""
        for budget, index in self._budgets:
            wait, new_tat = budget.wait_ms(keys[index], now)
            if wait > worst_wait:
                worst_wait, worst = wait, budget.name
            tats.append(new_tat)
        if worst:
            raise Rejection(
                Reason.RATE_LIMITED,
                f"{worst} budget exhausted",
                metadata={"budget": worst},
                retry_after_ms=max(1, int(worst_wait + 0.999)),
            )
        for (budget, index), new_tat in zip(self._budgets, tats, strict=True):
            budget.charge(keys[index], new_tat)
