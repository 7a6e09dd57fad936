"""The pre-auth guard: a client IP that keeps failing authentication is refused before any signature work.

Forged requests are cheap to send and expensive to check (a session lookup, then Ed25519). So
each ``invalid_signature``, ``session_not_found`` and ``payload_hash_mismatch`` rejection is
charged to its client IP's failure budget (``EDGEWARD_PREAUTH_FAILURE_LIMIT``, a GCRA limit); a
failure over that budget blocks the IP for ``EDGEWARD_PREAUTH_COOLDOWN_MS``. While blocked, every
request from it is refused right after decoding (request-flow step 1), before the session lookup
and the signature check, with ``rate_limited`` (ErrorInfo ``budget=preauth``) and a RetryInfo of
the cool-down left.

A block this instance has seen is remembered here too, so a flood from a blocked IP costs a dict
lookup, not a limiter call, even with the Redis back-end (which shares blocks between instances).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from edgeward.clock import monotonic_ms
from edgeward.protection.client_address import ip_limit_key
from edgeward.protection.limiter import DEFAULT_MAX_KEYS, Limit, Limiter, LimiterUnavailable, MemoryLimiter, Rate
from edgeward.reasons import Reason, Rejection

__all__ = ("FAILURE_REASONS", "PreAuthGuard")

FAILURE_REASONS = frozenset({Reason.INVALID_SIGNATURE, Reason.SESSION_NOT_FOUND, Reason.PAYLOAD_HASH_MISMATCH})
_SCOPE = "preauth"


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
        self._rate = Rate(limit) if limit else None
        self._cooldown_ms = cooldown_ms
        self._ipv6_prefix = ipv6_prefix
        self._clock = clock
        self._known: dict[str, float] = {}  # ip key -> end of its block on ``clock``, seen by this instance
        self.refusals = 0  # requests refused while their IP was blocked
        self.failures = 0  # authentication failures counted
        self.blocks = 0  # IPs blocked by this instance (a failure over the budget)

    def check(self, client_ip: str) -> Awaitable[None] | None:
        """Raise rate_limited while ``client_ip`` is blocked; None when decided at once, else an awaitable."""
        if self._rate is None:
            return None
        key = ip_limit_key(client_ip, self._ipv6_prefix) if ":" in client_ip else client_ip
        known = self._known
        if known:
            until = known.get(key)
            if until is not None:
                left = until - self._clock()
                if left > 0:
                    raise self._refusal(left)
                del known[key]
        try:
            left_or_pending = self._limiter.blocked(_SCOPE, key)
        except LimiterUnavailable:
            raise Rejection(Reason.LIMITER_UNAVAILABLE, "the pre-auth guard cannot be checked") from None
        if isinstance(left_or_pending, float):
            if left_or_pending > 0:
                self._remember(key, left_or_pending)
                raise self._refusal(left_or_pending)
            return None
        return self._settle(key, left_or_pending)

    async def failed(self, client_ip: str, reason: Reason) -> Rejection:
        """Count an authentication failure of ``client_ip`` and return the rejection to raise for it."""
        if self._rate is not None and reason in FAILURE_REASONS:
            self.failures += 1
            key = ip_limit_key(client_ip, self._ipv6_prefix)
            try:
                block = self._limiter.penalize(_SCOPE, key, self._rate, self._cooldown_ms)
                if not isinstance(block, float):
                    block = await block
            except LimiterUnavailable:
                block = 0.0  # failing closed already refuses every check; this failure stays uncounted
            if block > 0:
                if key not in self._known:
                    self.blocks += 1
                self._remember(key, block)
        return Rejection(reason)

    async def _settle(self, key: str, pending: Awaitable[float]) -> None:
        try:
            left = await pending
        except LimiterUnavailable:
            raise Rejection(Reason.LIMITER_UNAVAILABLE, "the pre-auth guard cannot be checked") from None
        if left > 0:
            self._remember(key, left)
            raise self._refusal(left)

    def _remember(self, key: str, left_ms: float) -> None:
        known = self._known
        if len(known) >= DEFAULT_MAX_KEYS:
            del known[next(iter(known))]  # the oldest: the shared limiter still holds its block
        known[key] = self._clock() + left_ms

    def _refusal(self, left_ms: float) -> Rejection:
        self.refusals += 1
        return Rejection(
            Reason.RATE_LIMITED,
            "too many authentication failures from this address",
            metadata={"budget": "preauth"},
            retry_after_ms=max(1, int(left_ms + 0.999)),
        )
