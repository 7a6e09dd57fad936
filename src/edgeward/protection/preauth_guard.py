"""The pre-auth guard: a client IP that keeps failing authentication is refused before any signature work.

Forged requests are cheap to send and expensive to check: a session lookup that may call the
backend, then Ed25519. So each ``invalid_signature``, ``session_not_found`` and
``payload_hash_mismatch`` rejection is charged to its client IP's failure budget
(``EDGEWARD_PREAUTH_FAILURE_LIMIT``, a GCRA limit), and the failure that spends the budget blocks
the IP for ``EDGEWARD_PREAUTH_COOLDOWN_MS``. While blocked, every request from it is refused
right after decoding (request-flow step 1), before the session lookup and the signature check,
with ``rate_limited`` (ErrorInfo ``budget=preauth``) and a RetryInfo of the cool-down left.

Work in flight counts as well, so that requests sent at once cannot all get past the budget
before the first of their failures is counted (docs/edge-protection.md §5):

- a lookup that may call the backend (``lookup``: the session is not in memory) takes one unit of
  the budget before it starts, as the failure it may turn out to be. The unit is given back when
  the session exists; it stays, as the failure, when it does not. Requests of one IP waiting for
  one session id share its lookup and its unit, so a device's burst on a cold session is not
  mistaken for an attack;
- a session in memory is not charged (no backend call, and no limiter call on the hot path):
  its signature check and the counting of its failure follow each other with no wait between
  them, in this process's own limiter. With a shared limiter (Redis) a failure is counted in
  both: at once in this process, which blocks the IP here after ``burst`` failures without
  waiting for Redis, and in Redis, which blocks it for every instance.
  ``before_signature_check`` applies those blocks to requests that were already past ``check``.

A block this instance has seen is remembered here too, so a flood from a blocked IP costs a dict
lookup, not a limiter call, even with the Redis back-end (which shares blocks between instances).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from edgeward.clock import monotonic_ms
from edgeward.protection.client_address import ip_limit_key
from edgeward.protection.limiter import DEFAULT_MAX_KEYS, Limit, Limiter, LimiterUnavailable, MemoryLimiter, Rate
from edgeward.reasons import Reason, Rejection

__all__ = ("FAILURE_REASONS", "PreAuthGuard")

FAILURE_REASONS = frozenset({Reason.INVALID_SIGNATURE, Reason.SESSION_NOT_FOUND, Reason.PAYLOAD_HASH_MISMATCH})
_SCOPE = "preauth"
_BLOCKED = "too many authentication failures from this address"
_SPENT = "too many authentication attempts from this address"

R = TypeVar("R")


class _Spent(Exception):
    """A lookup's charge was refused: the IP's budget has no unit left (failures and lookups in flight)."""

    def __init__(self, wait_ms: float) -> None:
        super().__init__(wait_ms)
        self.wait_ms = wait_ms


class PreAuthGuard:
    """Per-IP authentication failure budget with a cool-down; ``limit=None`` turns it off."""

    def __init__(
        self,
        limiter: Limiter | None = None,
        limit: Limit | None = None,
        *,
        cooldown_ms: int = 60_000,
        ipv6_prefix: int = 64,
        clock: Callable[[], float] = monotonic_ms,
    ) -> None:
        if cooldown_ms <= 0:
            raise ValueError("cooldown_ms must be positive")
        self._limiter: Limiter = limiter if limiter is not None else MemoryLimiter(clock)
        # Failures are also counted here at once when the limiter is shared (see the module docstring).
        self._local = self._limiter if isinstance(self._limiter, MemoryLimiter) else MemoryLimiter(clock)
        self._rate = Rate(limit) if limit else None
        self._cooldown_ms = cooldown_ms
        self._ipv6_prefix = ipv6_prefix
        self._clock = clock
        self._known: dict[str, float] = {}  # ip key -> end of its block on ``clock``, seen by this instance
        self._lookups: dict[tuple[str, str], asyncio.Task[Any]] = {}  # (ip key, session id) -> charged lookup
        self.refusals = 0  # requests refused before any work (blocked IP, or no unit left)
        self.failures = 0  # authentication failures counted (requests sharing a lookup that found nothing: one)
        self.blocks = 0  # IPs blocked by this instance (the failure that spent the budget)

    def check(self, client_ip: str) -> Awaitable[None] | None:
        """Raise rate_limited while ``client_ip`` is blocked; None when decided at once, else an awaitable."""
        if self._rate is None:
            return None
        key = self._key(client_ip)
        self._refuse_if_known_blocked(key)
        try:
            left_or_pending = self._limiter.blocked(_SCOPE, key)
        except LimiterUnavailable:
            raise _unavailable() from None
        if isinstance(left_or_pending, float):
            if left_or_pending > 0:
                self._remember(key, left_or_pending)
                raise self._refusal(left_or_pending, _BLOCKED)
            return None
        return self._settle(key, left_or_pending)

    def before_signature_check(self, client_ip: str) -> None:
        """Raise rate_limited if ``client_ip`` was blocked since ``check``, as far as this process knows.

        Called after the last wait before signature work, it holds requests that passed ``check``
        together to what the others' failures did meanwhile, without a limiter call.
        """
        if self._rate is not None and self._known:
            self._refuse_if_known_blocked(self._key(client_ip))

    async def lookup(self, client_ip: str, device_session_id: str, fetch: Callable[[str], Awaitable[R | None]]) -> R:
        """``fetch(device_session_id)``, a session lookup that may call the backend, charged to the IP first.

        Raises rate_limited, before any work, when the budget has no unit left (the lookups in
        flight count), and ``session_not_found``, counted as a failure, when the session does not
        exist. The lookup runs as a task that concurrent requests of the IP for the same id share
        and that settles its unit whatever becomes of them: a request cancelled meanwhile does not
        take the unit back with it, since the lookup goes on (else cancelling would dodge the budget).
        """
        rate = self._rate
        if rate is None:
            record = await fetch(device_session_id)
        else:
            key = self._key(client_ip)
            task = self._lookups.get((key, device_session_id))
            if task is None:
                task = self._start_lookup(key, rate, device_session_id, fetch)
            try:
                record = await asyncio.shield(task)
            except _Spent as spent:
                raise self._refusal(spent.wait_ms, _SPENT) from None
        if record is None:
            raise Rejection(Reason.SESSION_NOT_FOUND)
        return record

    async def failed(self, client_ip: str, reason: Reason) -> Rejection:
        """Count an authentication failure of ``client_ip`` and return the rejection to raise for it."""
        if self._rate is not None and reason in FAILURE_REASONS:
            await self._count_failure(self._key(client_ip), self._rate, charged=False)
        return Rejection(reason)

    # -- lookups ----------------------------------------------------------------------------

    def _start_lookup(
        self, key: str, rate: Rate, device_session_id: str, fetch: Callable[[str], Awaitable[R | None]]
    ) -> asyncio.Task[R | None]:
        self._refuse_if_known_blocked(key)  # learnt while this request's check was on its way
        lookups = self._lookups
        task = asyncio.ensure_future(self._charged_lookup(key, rate, device_session_id, fetch))
        lookups[(key, device_session_id)] = task

        def forget(done: asyncio.Task[R | None]) -> None:
            if lookups.get((key, device_session_id)) is done:
                del lookups[(key, device_session_id)]
            if not done.cancelled():
                done.exception()  # retrieved: every waiter may have been cancelled before it ended

        task.add_done_callback(forget)
        return task

    async def _charged_lookup(
        self, key: str, rate: Rate, device_session_id: str, fetch: Callable[[str], Awaitable[R | None]]
    ) -> R | None:
        """Charge, fetch, settle: the record, or None once the failure is counted; ``_Spent`` when refused."""
        try:
            verdict = self._limiter.acquire(((_SCOPE, key, rate),))
            if verdict is not None and not isinstance(verdict, tuple):
                verdict = await verdict
        except LimiterUnavailable:
            raise _unavailable() from None
        if verdict is not None:
            raise _Spent(verdict[1])
        try:
            record = await fetch(device_session_id)
        except BaseException:  # the backend failed, or the gateway is stopping: nothing learnt of the client
            self._limiter.refund(_SCOPE, key, rate)
            raise
        if record is None:
            await self._count_failure(key, rate, charged=True)
        else:
            self._limiter.refund(_SCOPE, key, rate)
        return record

    # -- failures and blocks ----------------------------------------------------------------

    async def _count_failure(self, key: str, rate: Rate, *, charged: bool) -> None:
        """Charge one failure to ``key``; the one that spends the budget blocks it for the cool-down.

        ``charged``: a lookup's failure, whose unit was taken before it started and stays as the
        failure; the limiter only decides the block.
        """
        self.failures += 1
        if self._local is not self._limiter:  # counted here at once, before Redis answers
            self._note_block(key, self._local.penalize(_SCOPE, key, rate, self._cooldown_ms))
        try:
            block = self._limiter.penalize(_SCOPE, key, rate, self._cooldown_ms, charged=charged)
            if not isinstance(block, float):
                block = await block
        except LimiterUnavailable:
            block = 0.0  # failing closed already refuses every check; this failure stays uncounted
        self._note_block(key, block)

    def _note_block(self, key: str, block_ms: float) -> None:
        if block_ms > 0:
            if key not in self._known:
                self.blocks += 1
            self._remember(key, block_ms)

    async def _settle(self, key: str, pending: Awaitable[float]) -> None:
        try:
            left = await pending
        except LimiterUnavailable:
            raise _unavailable() from None
        if left > 0:
            self._remember(key, left)
            raise self._refusal(left, _BLOCKED)

    def _refuse_if_known_blocked(self, key: str) -> None:
        known = self._known
        if known:
            until = known.get(key)
            if until is not None:
                left = until - self._clock()
                if left > 0:
                    raise self._refusal(left, _BLOCKED)
                del known[key]

    def _remember(self, key: str, left_ms: float) -> None:
        known = self._known
        if len(known) >= DEFAULT_MAX_KEYS:
            del known[next(iter(known))]  # the oldest: the shared limiter still holds its block
        known[key] = self._clock() + left_ms

    def _key(self, client_ip: str) -> str:
        return ip_limit_key(client_ip, self._ipv6_prefix) if ":" in client_ip else client_ip

    def _refusal(self, left_ms: float, message: str) -> Rejection:
        self.refusals += 1
        return Rejection(
            Reason.RATE_LIMITED,
            message,
            metadata={"budget": "preauth"},
            retry_after_ms=max(1, int(left_ms + 0.999)),
        )


def _unavailable() -> Rejection:
    return Rejection(Reason.LIMITER_UNAVAILABLE, "the pre-auth guard cannot be checked")
