"""The end-to-end benchmarks' short leg: each runs its whole course at a tiny size and writes its report.

``make bench`` runs them at full size and fails on a missed budget; here only the machinery is
checked (every server starts, every figure and every budget's per-round ratio is reported), since
budgets at this size and on a shared machine say nothing.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench.budgets import BUDGETS
from bench.e2e.ablated_gateway import STAGES
from bench.spread import Spread

ROOT = Path(__file__).resolve().parents[1]


def test_spread_is_median_min_max_of_per_round_ratios() -> None:
    spread = Spread.ratios([300.0, 330.0, 280.0], [150.0, 150.0, 200.0])
    assert (spread.median, spread.low, spread.high) == (2.0, 1.4, 2.2)
    assert spread.show() == "2.00 [1.40-2.20]"
    with pytest.raises(ValueError, match="at least one"):
        Spread.of([])


def _run(module: str, report: Path, *args: str) -> dict[str, Any]:
    """The report a benchmark wrote; it exits 1 when a budget is missed, which is not checked here."""
    out = subprocess.run(
        [sys.executable, "-m", module, "--json", str(report), *args],
        cwd=ROOT, capture_output=True, text=True, timeout=600, check=False,
    )
    assert out.returncode in (0, 1) and report.exists(), f"{module} failed:\n{out.stdout}\n{out.stderr}"
    result: dict[str, Any] = json.loads(report.read_text())
    return result


def test_e2e_reports_every_row_and_budget(tmp_path: Path) -> None:
    result = _run("bench.e2e", tmp_path / "e2e.json", "--requests", "200", "--warmup", "50", "--rounds", "1")
    assert set(result["budgets"]) == {"gateway_vs_floor", "gateway_vs_echo"}
    for name in result["budgets"]:
        assert result["budgets"][name]["budget"] == BUDGETS[name].describe()
        assert result["ratios"][name]["median"] > 0
    for server in ("echo", "echo_legs", "floor", "native", "pure", *STAGES):  # STAGES: the ablated gateways
        (run,) = result["runs"][server]
        assert run["failures"] == 0 and run["cpu_us_per_request"] > 0 and run["thread_wake_ups_per_request"] >= 0


def test_latency_reports_both_budgets_at_half_load(tmp_path: Path) -> None:
    result = _run(
        "bench.latency", tmp_path / "latency.json", "--percents", "50", "--duration", "0.5", "--rounds", "1",
        "--saturation-requests", "300", "--plot", str(tmp_path / "latency.png"),
    )
    assert set(result["budgets"]) == {"latency_p99", "cpu_at_half_load"}
    assert [rate["percent"] for rate in result["rates"]] == [50]
    assert result["ratios_at_50"]["cpu_at_half_load"]["median"] > 0
    (rate,) = result["rates"]
    for server in ("gateway", "pure", "floor", "echo"):  # the pure twin and the floor at the budgets' rate
        assert rate[server]["achieved_rps"] > 0
    for what in ("floor_vs_echo", "pure_vs_echo", "gateway_vs_floor"):
        assert set(result["other_ratios_at_50"][what]) == {"latency_p99", "cpu_at_half_load"}
    assert (tmp_path / "latency.png").stat().st_size > 0


def test_push_opens_streams_past_one_connection_and_delivers_every_event(tmp_path: Path) -> None:
    # 250 idle streams: more than the gateway's 100 streams per connection, so the benchmark's
    # channels must each hold their own connection (a shared one left stream 101 waiting forever).
    result = _run(
        "bench.push", tmp_path / "push.json", "--idle-streams", "250", "--subscribers", "100", "--events", "5"
    )
    for twin in ("native", "pure"):
        assert result[twin]["memory"]["streams"] == 250
        assert result[twin]["fan_out"]["delivered"] == result[twin]["fan_out"]["expected"] == 500
        assert result[twin]["revocation"]["revocations"] > 0


def test_workers_reports_native_and_pure_with_one_and_two_workers(tmp_path: Path) -> None:
    result = _run("bench.workers", tmp_path / "workers.json", "--rounds", "1", "--requests", "300", "--warmup", "50")
    assert set(result["best"]) == {"native 1", "native 2", "pure 1", "pure 2"}
    for config, best in result["best"].items():
        assert best["failures"] == 0 and best["failure_codes"] == {}, config
        assert best["processes"] == (3 if config.endswith("2") else 1) and best["cpu_us_per_request"] > 0
