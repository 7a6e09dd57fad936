"""Edge protection assembled from the settings: limiter back-ends, command budgets, the pre-auth
guard and the public auth limits, plus their metrics (docs/edge-protection.md).

One place decides which back-end each user of a limiter gets: without
``EDGEWARD_LIMITER_REDIS_URL`` all of them share one in-process ``MemoryLimiter``; with it, one
Redis connection carries two ``RedisLimiter`` views that differ only in their failure mode
(``EDGEWARD_LIMITER_ON_REDIS_ERROR`` for command budgets and the pre-auth guard,
``EDGEWARD_PUBLIC_LIMITER_ON_REDIS_ERROR`` for the public routes).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from typing import Protocol

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from edgeward.gateway.routes import RouteTable
from edgeward.gateway.settings import GatewaySettings
from edgeward.io.redis import RedisClient, connect
from edgeward.protection.budgets import CommandBudgets
from edgeward.protection.client_address import TrustedProxies
from edgeward.protection.limiter import Limiter, MemoryLimiter
from edgeward.protection.preauth_guard import PreAuthGuard
from edgeward.protection.redis_limiter import RedisLimiter
from edgeward.public.limits import PublicLimits

__all__ = ("EdgeProtection",)


class _CountsSignatures(Protocol):
    signature_verifications: int


class EdgeProtection:
    """The protection parts of one gateway; ``close()`` after the listeners stopped."""

    def __init__(
        self, settings: GatewaySettings, routes: RouteTable, clock: Callable[[], float] | None = None
    ) -> None:
        """``clock`` (ms) replaces both the in-process clock and Redis TIME; for tests."""
        memory = MemoryLimiter(clock) if clock else MemoryLimiter()
        self._redis: RedisClient | None = None
        self._shared: tuple[RedisLimiter, ...] = ()
        commands: Limiter = memory
        public: Limiter = memory
        if settings.limiter_redis_url:
            self._redis = connect(settings.limiter_redis_url, socket_timeout_ms=settings.limiter_redis_timeout_ms)
            retry_ms = settings.limiter_redis_retry_ms
            commands = RedisLimiter(
                self._redis, failure_mode=settings.limiter_on_redis_error, retry_ms=retry_ms, fallback=memory,
                clock=clock, name="command limiter",
            )
            public = RedisLimiter(
                self._redis, failure_mode=settings.public_limiter_on_redis_error, retry_ms=retry_ms, fallback=memory,
                clock=clock, name="public limiter",
            )
            self._shared = (commands, public)
        timing = {"clock": clock} if clock else {}
        prefix = settings.limit_ipv6_prefix
        self.budgets = CommandBudgets(
            ip=settings.budget_ip,
            session=settings.budget_session,
            user=settings.budget_user,
            message_type=settings.budget_message_type,
            overrides=routes.budget_overrides(),
            limiter=commands,
            ipv6_prefix=prefix,
            **timing,
        )
        self.guard = PreAuthGuard(
            commands, settings.preauth_failure_limit, cooldown_ms=settings.preauth_cooldown_ms,
            ipv6_prefix=prefix, **timing,
        )
        self.public_limits = PublicLimits(
            public,
            ip=settings.public_limit_ip,
            email=settings.public_limit_email,
            challenge=settings.public_limit_challenge,
            ipv6_prefix=prefix,
        )
        self.trusted_proxies: TrustedProxies = settings.trusted_proxies
        self.public_refused: Counter[str] = Counter()  # the public listener's own refusals, by error code
        self.backend = "redis" if self._redis else "in-process"

    def register_metrics(self, registry: CollectorRegistry, verifier: _CountsSignatures) -> None:
        """Export the counters (read at scrape time: nothing is updated per request but an int)."""
        registry.register(_ProtectionCollector(self, verifier))

    async def close(self) -> None:
        for limiter in self._shared:
            await limiter.close()
        if self._redis is not None:
            await self._redis.close()


class _ProtectionCollector(Collector):
    def __init__(self, protection: EdgeProtection, verifier: _CountsSignatures) -> None:
        self._protection = protection
        self._verifier = verifier

    def collect(self) -> Iterator[Metric]:
        guard, protection = self._protection.guard, self._protection
        yield CounterMetricFamily(
            "edgeward_signature_verifications", "Ed25519 request signature checks (request-flow step 4).",
            value=self._verifier.signature_verifications,
        )
        yield CounterMetricFamily(
            "edgeward_preauth_failures", "Authentication failures counted by the pre-auth guard.",
            value=guard.failures,
        )
        yield CounterMetricFamily(
            "edgeward_preauth_blocks", "Client IPs blocked by this instance for their authentication failures.",
            value=guard.blocks,
        )
        yield CounterMetricFamily(
            "edgeward_preauth_refusals", "Requests refused by the pre-auth guard before any signature work.",
            value=guard.refusals,
        )
        public = CounterMetricFamily(
            "edgeward_public_refused", "Public auth requests refused by the gateway itself, by error code.",
            labels=("code",),
        )
        for code, count in sorted(protection.public_refused.items()):
            public.add_metric((code,), count)
        yield public
        limited = CounterMetricFamily(
            "edgeward_public_rate_limited", "Public auth requests answered 429, by the limit that refused.",
            labels=("limit",),
        )
        for limit, count in sorted(protection.public_limits.refused.items()):
            limited.add_metric((limit,), count)
        yield limited
        errors = CounterMetricFamily(
            "edgeward_limiter_redis_errors", "Limiter calls Redis did not answer properly.", labels=("limiter",)
        )
        fallbacks = CounterMetricFamily(
            "edgeward_limiter_fallbacks", "Limiter decisions taken by the failure mode instead of Redis.",
            labels=("limiter",),
        )
        for name, limiter in zip(("commands", "public"), protection._shared, strict=False):
            errors.add_metric((name,), limiter.redis_errors)
            fallbacks.add_metric((name,), limiter.fallbacks)
        yield errors
        yield fallbacks
