"""The limiter interface and its in-process back-end: limits, GCRA arithmetic, all or nothing, blocks."""

from __future__ import annotations

import pytest

from edgeward.protection.limiter import Limit, MemoryLimiter, Rate, parse_failure_mode, parse_limit


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize("text", ["", "10", "10:0", "0:5", "-1:5", "x:y", "10:2.5", "5/d:1", "/m:1", "1/:1"])
def test_parse_limit_rejects_bad_text(text: str) -> None:
    with pytest.raises(ValueError):
        parse_limit(text)


@pytest.mark.parametrize(
    ("text", "limit", "shown"),
    [
        ("50:100", Limit(50, 100), "50:100"),
        ("0.5:1", Limit(0.5, 1), "30/m:1"),
        ("30/m:30", Limit(0.5, 30), "30/m:30"),
        ("6/h:5", Limit(6 / 3600, 5), "6/h:5"),
        ("2/S:3", Limit(2, 3), "2:3"),
        ("0.1/h:1", Limit(0.1 / 3600, 1), "0.1/h:1"),
        ("0.25:2", Limit(0.25, 2), "15/m:2"),
        ("7/m:1", Limit(7 / 60, 1), "7/m:1"),
    ],
)
def test_parse_limit_and_its_display(text: str, limit: Limit, shown: str) -> None:
    assert parse_limit(text) == limit
    assert str(limit) == shown
    parsed = parse_limit(shown)
    assert parsed is not None and parsed.burst == limit.burst
    assert parsed.rate_per_s == pytest.approx(limit.rate_per_s, rel=1e-12)


def test_off_and_failure_modes() -> None:
    assert parse_limit(" OFF ") is None
    assert [parse_failure_mode(m) for m in ("open", "Closed", "local ")] == ["open", "closed", "local"]
    with pytest.raises(ValueError):
        parse_failure_mode("maybe")


def hit(key: str, limit: Limit, scope: str = "s") -> tuple[str, str, Rate]:
    return scope, key, Rate(limit)


def test_a_key_admits_its_burst_then_refuses_until_one_interval_passed() -> None:
    clock = FakeClock()
    limiter = MemoryLimiter(clock)
    rate = hit("k", Limit(10, 3))
    assert [limiter.acquire([rate]) for _ in range(3)] == [None, None, None]
    assert limiter.acquire([rate]) == (0, pytest.approx(100.0))
    clock.now += 99.0
    assert limiter.acquire([rate]) == (0, pytest.approx(1.0))
    clock.now += 1.0
    assert limiter.acquire([rate]) is None


def test_a_full_refill_after_burst_intervals() -> None:
    clock = FakeClock()
    limiter = MemoryLimiter(clock)
    rate = hit("k", Limit(1 / 60, 5))  # 5 at once, then one a minute
    assert sum(limiter.acquire([rate]) is None for _ in range(10)) == 5
    clock.now += 5 * 60_000
    assert sum(limiter.acquire([rate]) is None for _ in range(10)) == 5


def test_all_or_nothing_names_the_longest_wait() -> None:
    clock = FakeClock()
    limiter = MemoryLimiter(clock)
    loose, tight = hit("a", Limit(1, 100), "loose"), hit("b", Limit(1, 1), "tight")
    assert limiter.acquire([loose, tight]) is None
    for _ in range(5):
        assert limiter.acquire([loose, tight]) == (1, pytest.approx(1000.0))
    # The refused attempts were charged to neither: "loose" still has 99 of its 100.
    assert sum(limiter.acquire([loose]) is None for _ in range(200)) == 99


def test_scopes_and_keys_are_independent() -> None:
    limiter = MemoryLimiter(FakeClock())
    one = Limit(1, 1)
    assert limiter.acquire([hit("k", one, "x")]) is None
    assert limiter.acquire([hit("k", one, "y")]) is None
    assert limiter.acquire([hit("j", one, "x")]) is None
    assert limiter.acquire([hit("k", one, "x")]) is not None


def test_keys_are_bounded_and_forgetting_one_only_admits_earlier() -> None:
    limiter = MemoryLimiter(FakeClock(), max_keys=2)
    one = Limit(1, 1)
    for key in "abc":
        assert limiter.acquire([hit(key, one)]) is None
    assert limiter.acquire([hit("a", one)]) is None  # "a" was dropped: its debt is forgotten
    assert limiter.acquire([hit("c", one)]) is not None


def test_a_refund_gives_back_one_request_and_never_raises_a_key_above_its_burst() -> None:
    clock = FakeClock()
    limiter = MemoryLimiter(clock)
    rate = hit("k", Limit(10, 3))
    assert [limiter.acquire([rate]) for _ in range(3)] == [None, None, None]
    assert limiter.acquire([rate]) is not None
    limiter.refund(*rate)
    assert limiter.acquire([rate]) is None  # the unit given back
    assert limiter.acquire([rate]) is not None
    for _ in range(5):  # more refunds than charges: the key comes to rest, no further
        limiter.refund(*rate)
    assert sum(limiter.acquire([rate]) is None for _ in range(10)) == 3
    clock.now += 1000.0  # a key at rest, or never charged: nothing to give back
    limiter.refund(*rate)
    limiter.refund("s", "unknown", rate[2])
    limiter.refund("no such scope", "k", rate[2])
    assert sum(limiter.acquire([rate]) is None for _ in range(10)) == 3


def test_a_refund_moves_the_debt_back_one_interval() -> None:
    clock = FakeClock()
    limiter = MemoryLimiter(clock)
    rate = hit("k", Limit(1, 2))  # one a second, two at once
    assert [limiter.acquire([rate]) for _ in range(2)] == [None, None]
    assert limiter.acquire([rate]) == (0, pytest.approx(1000.0))
    limiter.refund(*rate)
    assert limiter.acquire([rate]) is None
    clock.now += 400.0
    limiter.refund(*rate)  # the debt was 2 s, less 0.4 s: 1.6 s, now 0.6 s
    assert limiter.acquire([rate]) is None
    assert limiter.acquire([rate]) == (0, pytest.approx(600.0))


def test_penalize_blocks_a_key_when_a_failure_spends_its_rate_for_the_block_time() -> None:
    clock = FakeClock()
    limiter = MemoryLimiter(clock)
    rate = Rate(Limit(1 / 60, 3))
    assert [limiter.penalize("g", "ip", rate, 30_000) for _ in range(2)] == [0.0, 0.0]
    assert limiter.blocked("g", "ip") == 0.0
    assert limiter.penalize("g", "ip", rate, 30_000) == 30_000.0  # the third failure leaves no room: blocked
    clock.now += 10_000
    assert limiter.blocked("g", "ip") == pytest.approx(20_000.0)
    assert limiter.penalize("g", "ip", rate, 30_000) == pytest.approx(20_000.0)  # no extension while blocked
    assert limiter.blocked("g", "other") == 0.0
    clock.now += 20_000
    assert limiter.blocked("g", "ip") == 0.0


def test_blocks_are_bounded() -> None:
    limiter = MemoryLimiter(FakeClock(), max_keys=2)
    rate = Rate(Limit(1, 1))
    for key in "abc":
        limiter.penalize("g", key, rate, 1000)
        assert limiter.penalize("g", key, rate, 1000) == 1000.0
    assert limiter.blocked("g", "a") == 0.0 and limiter.blocked("g", "c") == 1000.0


def test_penalize_a_charge_already_taken_decides_only_the_block() -> None:
    limiter = MemoryLimiter(FakeClock())
    rate = Rate(Limit(1 / 60, 3))
    for _ in range(2):  # charged before the work, which failed: the charge is the failure
        assert limiter.acquire([("g", "ip", rate)]) is None
        assert limiter.penalize("g", "ip", rate, 30_000, charged=True) == 0.0
    assert limiter.acquire([("g", "ip", rate)]) is None  # the third unit, in flight
    assert limiter.penalize("g", "ip", rate, 1000) == 1000.0  # a failure now finds no room: blocked
    assert limiter.penalize("g", "ip", rate, 1000, charged=True) == 1000.0  # and stays so

