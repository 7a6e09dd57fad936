"""Benchmark fixtures: interleaved ratio measurements and the budget report.

``measure_ratio`` times a subject and its baseline in alternating samples of the same run, so a
neighbour's load or a frequency change hits both alike, and compares their fastest samples. Every budget checked is
printed at the end of the run, met or not; a missed budget fails its test.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest

from bench.budgets import BUDGETS

_RESULTS: list[tuple[str, float, float, float, bool]] = []


_SAMPLE_NS = 20_000  # a sample is at least this long, so timer overhead stays below 0.5%


def _batch_size(fn: Callable[[], object]) -> int:
    """Calls per sample: enough for a sample to last about ``_SAMPLE_NS``."""
    start = time.perf_counter_ns()
    for _ in range(100):
        fn()
    per_call = max(1, (time.perf_counter_ns() - start) // 100)
    return max(1, _SAMPLE_NS // per_call)


def _sample_ns(fn: Callable[[], object], batch: int) -> float:
    start = time.perf_counter_ns()
    for _ in range(batch):
        fn()
    return (time.perf_counter_ns() - start) / batch


class RatioMeter:
    def __call__(
        self,
        budget_name: str,
        subject: Callable[[], object],
        baseline: Callable[[], object],
        *,
        samples: int = 2000,
    ) -> float:
        """Measure, record and return the budget's ratio; the test asserts ``budget.met``.

        Samples of subject and baseline alternate, so load from elsewhere falls on both alike.
        Each side's estimate is its fastest sample, as timeit advises: slower samples differ by
        what other processes did to them, not by what the code costs.
        """
        budget = BUDGETS[budget_name]
        subject_batch, baseline_batch = _batch_size(subject), _batch_size(baseline)
        subject_ns, baseline_ns = [], []
        for _ in range(samples):
            subject_ns.append(_sample_ns(subject, subject_batch))
            baseline_ns.append(_sample_ns(baseline, baseline_batch))
        s, b = min(subject_ns), min(baseline_ns)
        ratio = s / b if budget.kind == "max" else b / s
        _RESULTS.append((budget_name, s / 1000, b / 1000, ratio, budget.met(ratio)))
        return ratio


@pytest.fixture(scope="session")
def measure_ratio() -> Iterator[RatioMeter]:
    yield RatioMeter()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _RESULTS:
        return
    write = terminalreporter.write_line
    write("")
    write("edgeward budgets (ratios measured in this run; µs are per operation, fastest of interleaved samples)")
    write(f"{'budget':<22} {'subject µs':>11} {'baseline µs':>12} {'ratio':>7}  {'limit':<40} result")
    for name, s_us, b_us, ratio, met in _RESULTS:
        write(
            f"{name:<22} {s_us:>11.3f} {b_us:>12.3f} {ratio:>7.3f}  {BUDGETS[name].describe():<40} "
            f"{'ok' if met else 'MISSED'}"
        )
