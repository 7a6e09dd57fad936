"""Rate limiting behind one interface: the limits, the back-end contract, and the in-process back-end.

Every limit of the gateway (public auth routes, command budgets, the pre-auth guard) is a GCRA
limiter, the token bucket kept as one timestamp per key (the *theoretical arrival time*, TAT):
``rate`` requests per second sustained, ``burst`` at once. A back-end implements four calls:

- ``acquire(hits)``: charge one request to several (scope, key, rate) at once, all or nothing;
- ``refund(scope, key, rate)``: give back one request charged to a key, for a charge taken
  before the work it pays for and owed only if that work fails (the pre-auth guard's lookups);
- ``penalize(scope, key, rate, block_ms)``: charge one failure (or turn a charge already taken
  into one); a failure that spends the rate (leaves no room for another) blocks the key for
  ``block_ms`` (the pre-auth guard's cool-down);
- ``blocked(scope, key)``: how long the key stays blocked.

Each but ``refund`` (which always answers at once; a shared back-end sends it without waiting)
may answer at once (``MemoryLimiter``) or with an awaitable (``RedisLimiter`` in
``edgeward.protection.redis_limiter``), which the caller must await at once: callers test for an awaitable
rather than always awaiting, so the in-process back-end on the command hot path costs no coroutine.
A back-end that cannot decide raises ``LimiterUnavailable``; what that means (fail open, closed,
or local) is the Redis back-end's configured failure mode, never the caller's guess.
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

from edgeward.clock import monotonic_ms

__all__ = (
    "DEFAULT_MAX_KEYS",
    "FAILURE_MODES",
    "Hit",
    "Limit",
    "Limiter",
    "LimiterUnavailable",
    "MemoryLimiter",
    "Rate",
    "Verdict",
    "parse_failure_mode",
    "parse_limit",
)

DEFAULT_MAX_KEYS = 100_000  # per scope, in-process: bounds memory whatever the number of clients

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}
# What a shared back-end does when it cannot decide: admit, refuse, or decide in this process alone.
FAILURE_MODES = ("open", "closed", "local")


@dataclasses.dataclass(frozen=True, slots=True)
class Limit:
    """``rate_per_s`` requests per second sustained, ``burst`` requests at once."""

    rate_per_s: float
    burst: int

    def __str__(self) -> str:
        # The unit that shows the rate as a whole number, else as a short decimal, so defaults
        # read as written (6/h:5) and the text parses back to the same limit.
        for digits in (0, 6):
            for unit, seconds in (("", 1.0), ("/m", 60.0), ("/h", 3600.0)):
                count = self.rate_per_s * seconds
                value = round(count, digits)
                if value >= 10**-digits and abs(count - value) < 1e-12 * count:
                    return f"{int(value) if value == int(value) else value}{unit}:{self.burst}"
        return f"{self.rate_per_s!r}:{self.burst}"


def parse_limit(text: str) -> Limit | None:
    """``RATE[/s|/m|/h]:BURST`` (requests per second, minute or hour; requests at once), or ``off``."""
    if text.strip().lower() == "off":
        return None
    rate_text, sep, burst_text = text.partition(":")
    count_text, slash, unit = rate_text.partition("/")
    seconds = _UNITS.get(unit.strip().lower() if slash else "s")
    try:
        count, burst = float(count_text), int(burst_text) if sep else 0
    except ValueError:
        raise ValueError("expected RATE:BURST (e.g. 50:100 or 6/h:5) or off") from None
    if not sep or seconds is None or count <= 0 or burst < 1:
        raise ValueError("expected RATE[/s|/m|/h]:BURST with RATE > 0 and BURST >= 1, or off")
    return Limit(count / seconds, burst)


def parse_failure_mode(text: str) -> str:
    """``open``, ``closed`` or ``local`` (see ``edgeward.protection.redis_limiter``)."""
    mode = text.strip().lower()
    if mode not in FAILURE_MODES:
        raise ValueError("expected open, closed or local")
    return mode


class Rate:
    """A ``Limit`` in the units the back-ends compute in: the emission interval and the tolerance.

    Built once per limit (not per request). A key admits a request when its TAT, moved on by one
    interval, is at most ``tolerance`` ahead of now; ``tolerance = interval * burst`` lets
    exactly ``burst`` requests through at once.
    """

    __slots__ = ("interval_ms", "interval_us", "limit", "tolerance_ms", "tolerance_us")

    def __init__(self, limit: Limit) -> None:
        self.limit = limit
        self.interval_ms = 1000.0 / limit.rate_per_s
        self.tolerance_ms = self.interval_ms * limit.burst
        # Whole microseconds for Redis, whose scripts store integers exactly.
        self.interval_us = max(1, round(self.interval_ms * 1000))
        self.tolerance_us = self.interval_us * limit.burst

    def __repr__(self) -> str:
        return f"Rate({self.limit})"


Hit = tuple[str, str, Rate]  # (scope, key, rate): one limit a request is charged to
# None: admitted and charged. Otherwise (index of the hit that refused with the longest wait, wait ms).
Verdict = tuple[int, float] | None


class LimiterUnavailable(Exception):
    """The back-end could not decide and its failure mode is "closed": refuse, do not guess."""


class Limiter(Protocol):
    def acquire(self, hits: Sequence[Hit]) -> Verdict | Awaitable[Verdict]:
        """Charge one request to every hit, or to none of them when any refuses (all or nothing)."""
        ...

    def refund(self, scope: str, key: str, rate: Rate) -> None:
        """Give back one request charged to ``key``: its TAT moves back one interval, never before now.

        So a refund can never raise a key above ``burst``. It answers at once: a shared back-end
        sends it without waiting, and a refund that is lost only refuses a little early.
        """
        ...

    def penalize(
        self, scope: str, key: str, rate: Rate, block_ms: int, *, charged: bool = False
    ) -> float | Awaitable[float]:
        """Charge one failure to ``key``; one that spends ``rate`` blocks it for ``block_ms``.

        "Spends": after it there is no room for another request (or there was none for it), so
        ``burst`` failures in a row block the key. While blocked, failures are not charged.
        ``charged``: the failure's unit was taken by ``acquire`` before the work that failed, and
        stays as the failure; only the block is decided. Returns the block left, ms (0: none).
        """
        ...

    def blocked(self, scope: str, key: str) -> float | Awaitable[float]:
        """Milliseconds ``key`` stays blocked in ``scope``; 0 when it is not."""
        ...

    async def close(self) -> None:
        """Release connections; later calls may raise ``LimiterUnavailable``."""
        ...


class _Scope:
    """The keys of one scope: TATs least recently charged first, and blocks (deadline on the clock)."""

    __slots__ = ("blocks", "tats")

    def __init__(self) -> None:
        self.tats: OrderedDict[str, float] = OrderedDict()
        self.blocks: dict[str, float] = {}


class MemoryLimiter:
    """The in-process back-end (the default): exact for one process, not shared, lost on restart.

    Memory is bounded per scope: beyond ``max_keys`` the least recently charged key is dropped,
    which forgets its debt and so only ever admits a request earlier, never refuses one that
    would have passed. Blocks are bounded the same way (the oldest goes first).
    """

    __slots__ = ("_clock", "_max_keys", "_scopes")

    def __init__(self, clock: Callable[[], float] = monotonic_ms, max_keys: int = DEFAULT_MAX_KEYS) -> None:
        if max_keys <= 0:
            raise ValueError("max_keys must be positive")
        self._clock = clock
        self._max_keys = max_keys
        self._scopes: dict[str, _Scope] = {}

    def _scope(self, name: str) -> _Scope:
        scope = self._scopes.get(name)
        if scope is None:
            scope = self._scopes[name] = _Scope()
        return scope

    def acquire(self, hits: Sequence[Hit]) -> Verdict:
        now = self._clock()
        scopes = self._scopes
        worst, worst_wait = -1, 0.0
        new_tats = []
        for index, (name, key, rate) in enumerate(hits):
            scope = scopes.get(name) or self._scope(name)
            tat = scope.tats.get(key, now)
            # Computed relative to now: an absolute now + interval - tolerance - now leaves float
            # crumbs (1e-9 ms) that would refuse a request the bucket has room for.
            ahead = (tat - now if tat > now else 0.0) + rate.interval_ms
            new_tat = now + ahead
            wait = ahead - rate.tolerance_ms
            if wait > worst_wait:
                worst, worst_wait = index, wait
            new_tats.append(new_tat)
        if worst >= 0:
            return worst, worst_wait
        max_keys = self._max_keys
        for (name, key, _), new_tat in zip(hits, new_tats, strict=True):
            tats = scopes[name].tats
            tats[key] = new_tat
            tats.move_to_end(key)
            if len(tats) > max_keys:
                tats.popitem(last=False)
        return None

    def refund(self, scope: str, key: str, rate: Rate) -> None:
        found = self._scopes.get(scope)
        if found is None:
            return
        tat = found.tats.get(key)
        if tat is None:
            return  # no debt to give back: a key absent is a key at rest
        tat -= rate.interval_ms
        if tat > self._clock():
            found.tats[key] = tat
        else:
            del found.tats[key]

    def penalize(self, scope: str, key: str, rate: Rate, block_ms: int, *, charged: bool = False) -> float:
        left = self.blocked(scope, key)
        if left:
            return left
        admitted = charged or self.acquire(((scope, key, rate),)) is None
        if block_ms <= 0 or (admitted and self._has_room(scope, key, rate)):
            return 0.0
        blocks = self._scope(scope).blocks
        blocks.pop(key, None)  # re-inserted as the newest
        blocks[key] = self._clock() + block_ms
        if len(blocks) > self._max_keys:
            del blocks[next(iter(blocks))]
        return float(block_ms)

    def _has_room(self, scope: str, key: str, rate: Rate) -> bool:
        """Whether ``acquire`` would admit one more request to ``key`` now (its own arithmetic)."""
        now = self._clock()
        found = self._scopes.get(scope)
        tat = found.tats.get(key, now) if found is not None else now
        return (tat - now if tat > now else 0.0) + rate.interval_ms - rate.tolerance_ms <= 0

    def blocked(self, scope: str, key: str) -> float:
        found = self._scopes.get(scope)
        if found is None or not found.blocks:
            return 0.0
        until = found.blocks.get(key)
        if until is None:
            return 0.0
        left = until - self._clock()
        if left > 0:
            return left
        del found.blocks[key]
        return 0.0

    async def close(self) -> None:
        self._scopes.clear()
