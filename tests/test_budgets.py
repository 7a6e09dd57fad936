"""Command budgets: GCRA per key, all-or-nothing charging, RetryInfo delay, bounded keys."""

from __future__ import annotations

import pytest

from edgeward.budgets import Budget, CommandBudgets, Limit, parse_limit
from edgeward.grpc_service import client_ip
from edgeward.reasons import Reason, Rejection


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def budgets(clock: FakeClock, **limits: Limit | None) -> CommandBudgets:
    base: dict[str, Limit | None] = {"ip": None, "session": None, "user": None, "message_type": None}
    base.update(limits)
    return CommandBudgets(clock=clock, **base)


def admitted(b: CommandBudgets, n: int, ip: str = "1.1.1.1", session: str = "s", user: str = "u", mt: str = "m") -> int:
    count = 0
    for _ in range(n):
        try:
            b.charge(ip, session, user, mt)
            count += 1
        except Rejection:
            pass
    return count


@pytest.mark.parametrize("text", ["", "10", "10:0", "0:5", "-1:5", "x:y", "10:2.5"])
def test_parse_limit_rejects_bad_text(text: str) -> None:
    with pytest.raises(ValueError):
        parse_limit(text)


def test_parse_limit() -> None:
    assert parse_limit("50:100") == Limit(50.0, 100)
    assert parse_limit("0.5:1") == Limit(0.5, 1)
    assert parse_limit("OFF") is None


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


def test_keys_are_bounded_and_forgetting_one_only_admits_earlier() -> None:
    budget = Budget("ip", Limit(1, 1), max_keys=2)
    for key in "abc":
        wait, tat = budget.wait_ms(key, 0.0)
        assert wait == 0
        budget.charge(key, tat)
    assert budget.wait_ms("a", 0.0)[0] == 0  # "a" was dropped: its debt is forgotten
    assert budget.wait_ms("c", 0.0)[0] > 0


@pytest.mark.parametrize(
    ("peer", "ip"),
    [("ipv4:127.0.0.1:5000", "127.0.0.1"), ("ipv6:[::1]:5000", "::1"), ("unix:/tmp/s", "unix:/tmp/s")],
)
def test_client_ip_from_grpc_peer(peer: str, ip: str) -> None:
    assert client_ip(peer) == ip
