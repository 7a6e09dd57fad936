"""The pre-auth guard: failures counted per IP, a block for the cool-down, refusals before signature work."""

from __future__ import annotations

import pytest

from edgeward.protection.limiter import Limit, MemoryLimiter
from edgeward.protection.preauth_guard import FAILURE_REASONS, PreAuthGuard
from edgeward.reasons import Reason, Rejection


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


THREE_A_MINUTE = Limit(1 / 60, 3)


def guard(clock: FakeClock, limit: Limit | None = THREE_A_MINUTE, cooldown_ms: int = 30_000) -> PreAuthGuard:
    return PreAuthGuard(MemoryLimiter(clock), limit, cooldown_ms=cooldown_ms, clock=clock)


async def fail(g: PreAuthGuard, ip: str = "198.51.100.1", reason: Reason = Reason.INVALID_SIGNATURE) -> None:
    rejection = await g.failed(ip, reason)
    assert rejection.reason is reason  # the failing request keeps its own answer


def refusal(g: PreAuthGuard, ip: str = "198.51.100.1") -> Rejection | None:
    try:
        assert g.check(ip) is None  # the in-process limiter decides at once
    except Rejection as rejection:
        return rejection
    return None


def test_the_counted_reasons() -> None:
    assert {r.wire for r in FAILURE_REASONS} == {"invalid_signature", "session_not_found", "payload_hash_mismatch"}


@pytest.mark.parametrize("reason", sorted(FAILURE_REASONS, key=lambda r: r.wire))
async def test_failures_over_the_budget_block_the_ip_for_the_cool_down(reason: Reason) -> None:
    clock = FakeClock()
    g = guard(clock)
    for _ in range(3):
        await fail(g, reason=reason)
        assert refusal(g) is None
    await fail(g, reason=reason)  # the fourth failure is over the budget
    rejection = refusal(g)
    assert rejection is not None and rejection.reason is Reason.RATE_LIMITED
    assert rejection.metadata == {"budget": "preauth"} and rejection.retry_after_ms == 30_000
    assert refusal(g, "198.51.100.2") is None  # other addresses are not concerned
    clock.now += 20_000
    left = refusal(g)
    assert left is not None and left.retry_after_ms == 10_000
    clock.now += 10_000
    assert refusal(g) is None  # cool-down over
    assert (g.failures, g.blocks, g.refusals) == (4, 1, 2)


async def test_other_rejections_are_not_counted() -> None:
    g = guard(FakeClock())
    for reason in (Reason.STALE_REQUEST, Reason.REPLAYED_REQUEST, Reason.SESSION_REVOKED, Reason.INVALID_ENVELOPE):
        for _ in range(10):
            await fail(g, reason=reason)
    assert refusal(g) is None and g.failures == 0


async def test_off_counts_nothing() -> None:
    g = guard(FakeClock(), limit=None)
    for _ in range(100):
        await fail(g)
    assert refusal(g) is None and g.failures == 0


async def test_ipv6_failures_count_per_prefix() -> None:
    clock = FakeClock()
    g = PreAuthGuard(MemoryLimiter(clock), Limit(1 / 60, 1), cooldown_ms=1000, clock=clock, ipv6_prefix=64)
    await fail(g, "2001:db8:1:2::1")
    await fail(g, "2001:db8:1:2::99")  # another address of the same /64
    assert refusal(g, "2001:db8:1:2::abc") is not None
    assert refusal(g, "2001:db8:1:3::1") is None


async def test_a_block_set_by_another_instance_is_seen_through_the_shared_limiter() -> None:
    clock = FakeClock()
    shared = MemoryLimiter(clock)  # stands for Redis: both guards use it
    one = PreAuthGuard(shared, Limit(1 / 60, 1), cooldown_ms=5000, clock=clock)
    two = PreAuthGuard(shared, Limit(1 / 60, 1), cooldown_ms=5000, clock=clock)
    await fail(one)
    await fail(one)
    rejection = refusal(two)
    assert rejection is not None and rejection.retry_after_ms == 5000
    assert two.refusals == 1 and two.blocks == 0
