"""Command budgets: each budget trips with RetryInfo, all-or-nothing charging, overrides, IPv6 keying."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

import pytest

from edgeward.gateway.grpc_service import client_ip
from edgeward.protection.budgets import CommandBudgets, Limit, parse_limit
from edgeward.protection.limiter import Hit, LimiterUnavailable, Verdict
from edgeward.reasons import Reason, Rejection


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def budgets(clock: FakeClock, **limits: Any) -> CommandBudgets:
    base: dict[str, Any] = {"ip": None, "session": None, "user": None, "message_type": None}
    base.update(limits)
    return CommandBudgets(clock=clock, **base)


def admitted(b: CommandBudgets, n: int, ip: str = "1.1.1.1", session: str = "s", user: str = "u", mt: str = "m") -> int:
    count = 0
    for _ in range(n):
        try:
            assert b.charge(ip, session, user, mt) is None  # the in-process limiter answers at once
            count += 1
        except Rejection:
            pass
    return count


def test_budgets_reexports_the_limit_parser() -> None:
    assert parse_limit("50:100") == Limit(50.0, 100)


@pytest.mark.parametrize("name", ["ip", "session", "user", "message_type"])
def test_each_budget_admits_its_burst_then_refuses_with_retry_info(name: str) -> None:
    clock = FakeClock()
    b = budgets(clock, **{name: Limit(10, 3)})
    assert admitted(b, 10) == 3
    with pytest.raises(Rejection) as info:
        b.charge("1.1.1.1", "s", "u", "m")
    assert info.value.reason is Reason.RATE_LIMITED
    assert info.value.retry_after_ms == 100 and info.value.metadata == {"budget": name}
    clock.now += 100
    assert admitted(b, 1) == 1


def test_budgets_are_per_key() -> None:
    clock = FakeClock()
    b = budgets(clock, ip=Limit(1, 2), message_type=Limit(1, 1))
    assert admitted(b, 5, ip="1.1.1.1", mt="a") == 1
    assert admitted(b, 5, ip="1.1.1.1", mt="b") == 1
    assert admitted(b, 5, ip="2.2.2.2", mt="c") == 1


def test_a_refused_request_is_not_charged_to_the_other_budgets() -> None:
    clock = FakeClock()
    b = budgets(clock, ip=Limit(1, 1), session=Limit(1, 100))
    assert admitted(b, 1, session="a") == 1
    assert admitted(b, 50, session="b") == 0  # refused by the IP budget
    clock.now += 1000
    assert admitted(b, 1, ip="2.2.2.2", session="b") == 1


def test_sustained_rate() -> None:
    clock = FakeClock()
    b = budgets(clock, session=Limit(100, 1))
    total = 0
    for _ in range(1000):
        total += admitted(b, 1)
        clock.now += 1  # 1000 attempts over one second
    assert total == 100


def test_a_message_type_override_replaces_the_default_for_that_type_only() -> None:
    clock = FakeClock()
    b = budgets(
        clock,
        message_type=Limit(1, 10),
        overrides={"user.export": Limit(1 / 3600, 1), "user.ping": None},
    )
    assert admitted(b, 5, mt="user.export") == 1
    with pytest.raises(Rejection) as info:
        b.charge("1.1.1.1", "s", "u", "user.export")
    assert info.value.metadata == {"budget": "message_type"} and info.value.retry_after_ms == 3_600_000
    assert admitted(b, 50, mt="user.ping") == 50  # "off"
    assert admitted(b, 50, mt="user.echo") == 10  # the default
    assert admitted(b, 5, user="other", mt="user.export") == 1  # per user


def test_all_budgets_off_admits_everything() -> None:
    assert admitted(budgets(FakeClock()), 1000) == 1000


def test_ipv6_clients_share_their_prefix_budget() -> None:
    b = budgets(FakeClock(), ip=Limit(1, 2), ipv6_prefix=64)
    assert admitted(b, 1, ip="2001:db8:1:2::1") == 1
    assert admitted(b, 1, ip="2001:db8:1:2:ffff::9") == 1
    assert admitted(b, 1, ip="2001:db8:1:2::77") == 0  # the same /64
    assert admitted(b, 1, ip="2001:db8:1:3::1") == 1


class ScriptedLimiter:
    """A limiter that answers through an awaitable (as the Redis one does), or fails."""

    def __init__(self, verdict: Verdict, fail: bool = False) -> None:
        self.verdict = verdict
        self.fail = fail
        self.hits: list[list[Hit]] = []

    def acquire(self, hits: list[Hit]) -> Awaitable[Verdict]:
        self.hits.append(list(hits))

        async def answer() -> Verdict:
            if self.fail:
                raise LimiterUnavailable("down")
            return self.verdict

        return answer()


async def test_an_awaitable_limiter_answer_is_awaited_by_the_caller() -> None:
    def make(limiter: ScriptedLimiter) -> CommandBudgets:
        return CommandBudgets(
            ip=Limit(1, 1), session=Limit(1, 1), user=None, message_type=Limit(1, 1), limiter=limiter  # type: ignore[arg-type]
        )

    ok = ScriptedLimiter(None)
    pending = make(ok).charge("1.1.1.1", "s", "u", "m")
    assert pending is not None and await pending is None
    assert [scope for scope, _, _ in ok.hits[0]] == ["budget.ip", "budget.session", "budget.message_type"]
    refused = make(ScriptedLimiter((1, 250.0))).charge("1.1.1.1", "s", "u", "m")
    assert refused is not None
    with pytest.raises(Rejection) as info:
        await refused
    assert info.value.metadata == {"budget": "session"} and info.value.retry_after_ms == 250
    failing = make(ScriptedLimiter(None, fail=True)).charge("1.1.1.1", "s", "u", "m")
    assert failing is not None
    with pytest.raises(Rejection) as info:
        await failing
    assert info.value.reason is Reason.LIMITER_UNAVAILABLE


@pytest.mark.parametrize(
    ("peer", "ip"),
    [("ipv4:127.0.0.1:5000", "127.0.0.1"), ("ipv6:[::1]:5000", "::1"), ("unix:/tmp/s", "unix:/tmp/s")],
)
def test_client_ip_from_grpc_peer(peer: str, ip: str) -> None:
    assert client_ip(peer) == ip
