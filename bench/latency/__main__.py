"""Open-loop latency: the gateway's p50 / p99 / p99.9 against a bare grpc.aio echo at the same rates.

``python -m bench.latency`` (part of ``make bench``) starts, on loopback, a private redis-server
and the stub backend, then measures the native gateway's saturation throughput closed loop (the
load generator of bench.e2e: pre-signed requests, 32 in flight). It then offers 25, 50, 75 and 90%
of that rate, open loop (bench/latency/loadgen.py: each request sent at its scheduled time,
however many are still unanswered, latency counted from the scheduled time), to a fresh native
gateway and a fresh bare grpc.aio echo server (bench/e2e/echo_server.py) in turn, rate by rate,
over the rounds; at the budgets' rate (50%) also to the pure-Python gateway and to bench.e2e's
in-place floor (the echo making the gateway's Redis and backend calls, one verify and one sign),
whose ratios to the echo say what a gateway with no Python of its own would score. The measured
server runs alone on core 0 and everything else on core 1, as in bench.e2e.

Each figure is the median over the rounds, with the p99's minimum and maximum beside it. The
table is printed and written as JSON, the chart drawn as a PNG, and the run fails if the gateway
misses a budget at 50% (bench/budgets.py), each checked against the median of per-round ratios
(bench/spread.py): ``latency_p99``, its p99 within a multiple of the echo's p99 at the same rate,
and ``cpu_at_half_load``, its CPU per request within a multiple of the echo's at that rate. A
round in which either server failed a call counts as a miss: a failed call has no latency.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench.budgets import BUDGETS
from bench.latency import servers
from bench.latency.plot import draw
from bench.spread import Spread
from bench.stack import BUDGETS_NEVER_REFUSE, ROOT, SERVER_CORE, Stub, move_to_other_cores, redis_and_stub

BUDGET_PERCENT = 50
_KINDS = ("gateway", "echo")  # at every rate
_KINDS_AT_BUDGET = ("gateway", "pure", "floor", "echo")  # at BUDGET_PERCENT, in this order


def _loadgen(module: str, server: servers.Server, extra: list[str]) -> dict[str, Any]:
    cmd = [sys.executable, "-m", module, "--target", server.target, "--pid", str(server.pid), *server.loadgen_args]
    out = subprocess.run([*cmd, *extra], cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"load generator failed:\n{out.stderr}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def open_loop_env(stub: Stub, redis_url: str, max_pending_calls: int) -> dict[str, str]:
    """The gateway's environment for open-loop runs (this benchmark and bench.latency.shedding)."""
    return stub.env | BUDGETS_NEVER_REFUSE | {
        "EDGEWARD_REDIS_URL": redis_url,
        # Open loop, a stall piles calls up on the few connections; at the default cap of 100 per
        # connection the gateway refuses the excess (RST_STREAM REFUSED_STREAM, UNAVAILABLE), which
        # the echo server (no cap) never does. Latency is measured here, not the cap.
        "EDGEWARD_GRPC_MAX_CONCURRENT_STREAMS": "100000",
        # Likewise gRPC core sheds calls the loop has not taken yet (CANCELLED, docs/operations.md
        # "Overload"): at its default of 1,000 that hid the queue's latency near saturation as failures.
        "EDGEWARD_GRPC_MAX_PENDING_CALLS": str(max_pending_calls),
    }


def _saturation(args: argparse.Namespace, env: dict[str, str]) -> dict[str, Any]:
    """The gateway's closed-loop throughput, measured as bench.e2e does (32 in flight, after a warm-up)."""
    with servers.gateway(env) as server:
        result = _loadgen(
            "bench.e2e.loadgen", server,
            ["--requests", str(args.saturation_requests), "--warmup", "1000", "--concurrency", "32"],
        )
    if result["failures"]:
        raise RuntimeError(f"saturation run: {result['failures']:.0f} requests failed")
    return result


def _paced(args: argparse.Namespace, env: dict[str, str], kind: str, rate: float) -> dict[str, Any]:
    if kind in ("gateway", "pure"):
        server_cm = servers.gateway(env, pure=kind == "pure")
    else:
        server_cm = servers.echo(env, floor=kind == "floor")
    with server_cm as server:
        return _loadgen(
            "bench.latency.loadgen", server,
            ["--rate", f"{rate:.1f}", "--duration", str(args.duration), "--channels", str(args.channels)],
        )


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.latency", description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=4.0, help="measured seconds per server and rate")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds; budgets take the median ratio")
    parser.add_argument(
        "--percents", default="25,50,75,90", help=f"offered loads, % of saturation (the budgets need {BUDGET_PERCENT})"
    )
    parser.add_argument("--channels", type=int, default=4, help="gRPC channels (connections) of the load generator")
    parser.add_argument("--saturation-requests", type=int, default=8_000)
    parser.add_argument(
        "--max-pending-calls", type=int, default=100_000,
        help="the gateway's EDGEWARD_GRPC_MAX_PENDING_CALLS (its default, 1000, sheds calls near saturation)",
    )
    parser.add_argument("--json", default=str(ROOT / "bench" / "results" / "latency.json"))
    parser.add_argument("--plot", default=str(ROOT / "docs" / "latency.png"))
    args = parser.parse_args()
    percents = sorted({int(p) for p in args.percents.split(",")} | {BUDGET_PERCENT})
    move_to_other_cores()  # inherited by Redis, the stub and the load generators

    with redis_and_stub("latency") as (redis, stub):
        env = open_loop_env(stub, redis.url, args.max_pending_calls)
        saturation = _saturation(args, env)
        runs: dict[int, dict[str, list[dict[str, Any]]]] = {p: {kind: [] for kind in _kinds(p)} for p in percents}
        for _ in range(args.rounds):
            for percent in percents:
                for kind in _kinds(percent):
                    runs[percent][kind].append(_paced(args, env, kind, saturation["requests_per_s"] * percent / 100))
    return _report(args, saturation, runs)


def _kinds(percent: int) -> tuple[str, ...]:
    return _KINDS_AT_BUDGET if percent == BUDGET_PERCENT else _KINDS


_FIELDS = ("achieved_rps", "p50_ms", "p99_ms", "p999_ms", "cpu_us_per_request", "max_in_flight", "send_late_p99_ms")
_BUDGETS = {"latency_p99": "p99_ms", "cpu_at_half_load": "cpu_us_per_request"}
_LABELS = {"latency_p99": "p99", "cpu_at_half_load": "CPU per request"}


def _ratio(at: dict[str, list[dict[str, Any]]], subject: str, baseline: str, key: str) -> Spread:
    """``subject / baseline`` of one figure, round by round, at one rate."""
    return Spread.ratios([run[key] for run in at[subject]], [run[key] for run in at[baseline]])


def _medians(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Each figure's median over the rounds, and the failures of all of them."""
    row: dict[str, Any] = {key: Spread.of([run[key] for run in runs]).median for key in _FIELDS}
    row["failures"] = sum(run["failures"] for run in runs)
    row["wake_ups"] = Spread.of(
        [run["main_voluntary_switches_per_request"] + run["main_involuntary_switches_per_request"] for run in runs]
    ).median
    return row


def _report(
    args: argparse.Namespace, saturation: dict[str, Any], runs: dict[int, dict[str, list[dict[str, Any]]]]
) -> int:
    sat = saturation["requests_per_s"]
    cores = "server alone on core 0" if SERVER_CORE is not None else "one core shared"
    print(
        f"\nedgeward open-loop latency: gateway saturation {sat:.0f} req/s closed loop (32 in flight); "
        f"{args.duration:g} s per server and rate, {args.channels} channels, loopback, uvloop, {cores}, "
        f"median of {args.rounds} alternating rounds"
    )
    print(
        f"{'load':>5} {'offered':>8} {'server':<8} {'achieved':>8} {'p50 ms':>7} {'p99 ms':>7} {'p99.9 ms':>8} "
        f"{'CPU µs/req':>10} {'wake-ups':>8} {'in flight':>9} {'p99 min-max':>13} {'send late p99':>13} {'failed':>6}"
    )
    rates, notes = [], []
    for percent, by_kind in runs.items():
        row: dict[str, Any] = {"percent": percent, "offered_rps": sat * percent / 100}
        for kind, kind_runs in by_kind.items():
            median = _medians(kind_runs)
            p99 = Spread.of([run["p99_ms"] for run in kind_runs])
            row[kind] = median
            row[f"{kind}_runs"] = kind_runs
            print(
                f"{percent:>4}% {row['offered_rps']:>8.0f} {kind:<8} {median['achieved_rps']:>8.0f} "
                f"{median['p50_ms']:>7.2f} {median['p99_ms']:>7.2f} {median['p999_ms']:>8.2f} "
                f"{median['cpu_us_per_request']:>10.1f} {median['wake_ups']:>8.1f} {median['max_in_flight']:>9.0f} "
                f"{f'{p99.low:.2f}-{p99.high:.2f}':>13} {median['send_late_p99_ms']:>13.2f} {median['failures']:>6}"
            )
            notes += [
                f"  {kind} at {percent}%: failed {run['failure_codes']}, first: {run['first_failure']}"
                for run in kind_runs
                if run["failures"]
            ]
        rates.append(row)
    if notes:
        print("\n".join(notes))
    print("(wake-ups: the server main thread's context switches per request, voluntary + involuntary)")
    at = runs[BUDGET_PERCENT]
    failed = any(run["failures"] for kind in _KINDS for run in at[kind])  # a failed call has no latency
    ratios = {name: _ratio(at, "gateway", "echo", key) for name, key in _BUDGETS.items()}
    met = {name: BUDGETS[name].met(spread.median) and not failed for name, spread in ratios.items()}
    print()
    for name, spread in ratios.items():
        print(f"budget {name}: {BUDGETS[name].describe()}: {spread.show()} {'ok' if met[name] else 'MISSED'}")
    if failed:
        print(f"  (calls failed at {BUDGET_PERCENT}%: every budget there is missed)")
    # The same ratios for the pure twin and for the floor, which no gateway can go below: no budget.
    others = {
        f"{subject}_vs_{baseline}": {name: _ratio(at, subject, baseline, key) for name, key in _BUDGETS.items()}
        for subject, baseline in (("floor", "echo"), ("pure", "echo"), ("gateway", "floor"))
    }
    for what, by_budget in others.items():
        shown = ", ".join(f"{_LABELS[name]} {spread.show()}" for name, spread in by_budget.items())
        print(f"  {what.replace('_vs_', ' / ')} at {BUDGET_PERCENT}%, no budget: {shown}")
    result = {
        "saturation_rps": sat, "saturation": saturation, "duration_s": args.duration, "rounds": args.rounds,
        "channels": args.channels, "rates": rates,
        "ratios_at_50": {name: spread.as_json() for name, spread in ratios.items()},
        "other_ratios_at_50": {
            what: {name: spread.as_json() for name, spread in by_budget.items()} for what, by_budget in others.items()
        },
        "budgets": {name: {"budget": BUDGETS[name].describe(), "met": met[name]} for name in ratios},
    }
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    draw(result, Path(args.plot))
    print(f"written: {path}, {args.plot}")
    return 0 if all(met.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
