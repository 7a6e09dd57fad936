"""The open-loop benchmark's arithmetic (bench/latency/schedule.py): schedule, latency, percentiles."""

from __future__ import annotations

import pytest

from bench.latency.schedule import latencies, percentile, send_times, summarize


def test_send_times_are_fixed_in_advance_at_the_rate() -> None:
    assert send_times(4, 5, start=10.0) == [10.0, 10.25, 10.5, 10.75, 11.0]
    with pytest.raises(ValueError):
        send_times(0, 3)


def test_latency_counts_from_the_scheduled_time_so_a_late_send_counts_its_lateness() -> None:
    scheduled = send_times(1000, 3)  # due at 0, 1 and 2 ms
    # the second request left 5 ms late (the generator was held up) and was answered 1 ms later:
    # its latency is 6 ms, not the 1 ms a closed-loop client timing from its own send would report
    answered = [0.001, 0.006 + 0.001, 0.003]
    assert latencies(scheduled, answered) == pytest.approx([0.001, 0.006, 0.001])


def test_nearest_rank_percentiles_of_known_samples() -> None:
    samples = [float(i) for i in range(1, 1001)]
    assert percentile(samples, 50) == 500.0
    assert percentile(samples, 99) == 990.0
    assert percentile(samples, 99.9) == 999.0
    assert percentile(samples, 100) == 1000.0
    assert percentile([7.0], 99.9) == 7.0
    assert percentile([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0], 99.9) == 10.0  # never better than a sample


def test_percentile_refuses_nonsense() -> None:
    with pytest.raises(ValueError):
        percentile([], 50)
    with pytest.raises(ValueError):
        percentile([1.0], 0)


def test_summary_is_in_milliseconds_and_sorts_its_input() -> None:
    seconds = [i / 1000 for i in range(1000, 0, -1)]  # 1..1000 ms, descending
    assert summarize(seconds) == pytest.approx({"p50_ms": 500.0, "p99_ms": 990.0, "p999_ms": 999.0, "max_ms": 1000.0})
