"""Open-loop latency: the gateway's p50 / p99 / p99.9 against a bare grpc.aio echo at the same rates.

``python -m bench.latency`` (part of ``make bench``) starts, on loopback, a private redis-server
and the stub backend, then measures the native gateway's saturation throughput closed loop (the
load generator of bench.e2e: pre-signed requests, 32 in flight). It then offers 25, 50, 75 and 90%
of that rate, open loop (bench/latency/loadgen.py: each request sent at its scheduled time,
however many are still unanswered, latency counted from the scheduled time), to a fresh native
gateway and a fresh bare grpc.aio echo server (bench/e2e/echo_server.py) in turn, rate by rate,
over the rounds. The measured server runs alone on core 0 and everything else on core 1, as in
bench.e2e.

Each server's figures at a rate are from its round with the lowest p99 (load from outside the
benchmark only ever adds latency); the spread over rounds is printed beside them. The table is
printed and written as JSON, the chart drawn as a PNG, and the run fails if the gateway misses the
``latency_p99`` budget (bench/budgets.py): its p99 at 50% within a multiple of the echo's p99 at
the same rate, a ratio of two things measured side by side.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.budgets import BUDGETS
from bench.latency import servers
from bench.latency.plot import draw
from bench.stack import ROOT, SERVER_CORE, Stub, move_to_other_cores
from tests.support.redis_server import RedisServer

PERCENTS = (25, 50, 75, 90)
BUDGET_PERCENT = 50
_KINDS = ("gateway", "echo")


def _loadgen(module: str, server: servers.Server, extra: list[str]) -> dict[str, Any]:
    cmd = [sys.executable, "-m", module, "--target", server.target, "--pid", str(server.pid), *server.loadgen_args]
    out = subprocess.run([*cmd, *extra], cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"load generator failed:\n{out.stderr}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


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
    server_cm = servers.gateway(env) if kind == "gateway" else servers.echo(env, legs=args.echo_legs)
    with server_cm as server:
        return _loadgen(
            "bench.latency.loadgen", server,
            ["--rate", f"{rate:.1f}", "--duration", str(args.duration), "--channels", str(args.channels)],
        )


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.latency", description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=4.0, help="measured seconds per server and rate")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds; each figure is its best")
    parser.add_argument("--channels", type=int, default=4, help="gRPC channels (connections) of the load generator")
    parser.add_argument("--saturation-requests", type=int, default=8_000)
    parser.add_argument(
        "--echo-legs", action="store_true",
        help="the echo also makes the gateway's Redis and backend calls (not the budget's baseline)",
    )
    parser.add_argument("--json", default=str(ROOT / "bench" / "results" / "latency.json"))
    parser.add_argument("--plot", default=str(ROOT / "docs" / "latency.png"))
    args = parser.parse_args()
    move_to_other_cores()  # inherited by Redis, the stub and the load generators

    redis = RedisServer()
    redis.start()
    stub = Stub(Path(tempfile.mkdtemp(prefix="edgeward-latency-")))
    big = "1000000000:1000000000"  # budgets stay on (their cost is part of the latency) but never refuse
    env = stub.env | {f"EDGEWARD_BUDGET_{scope}": big for scope in ("IP", "SESSION", "USER", "MESSAGE_TYPE")} | {
        "EDGEWARD_REDIS_URL": redis.url,
        # Open loop, a stall piles calls up on the few connections; at the default cap of 100 per
        # connection the gateway refuses the excess (RST_STREAM REFUSED_STREAM, UNAVAILABLE), which
        # the echo server (no cap) never does. Latency is measured here, not the cap.
        "EDGEWARD_GRPC_MAX_CONCURRENT_STREAMS": "100000",
    }
    try:
        stub.start()
        saturation = _saturation(args, env)
        runs: dict[int, dict[str, list[dict[str, Any]]]] = {p: {kind: [] for kind in _KINDS} for p in PERCENTS}
        for _ in range(args.rounds):
            for percent in PERCENTS:
                for kind in _KINDS:
                    runs[percent][kind].append(_paced(args, env, kind, saturation["requests_per_s"] * percent / 100))
    finally:
        stub.stop()
        redis.close()
    return _report(args, saturation, runs)


def _best(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The round with the lowest p99 among those where every call was answered, if any was."""
    return min(runs, key=lambda run: (run["failures"] > 0, run["p99_ms"]))


def _report(
    args: argparse.Namespace, saturation: dict[str, Any], runs: dict[int, dict[str, list[dict[str, Any]]]]
) -> int:
    sat = saturation["requests_per_s"]
    cores = "server alone on core 0" if SERVER_CORE is not None else "one core shared"
    print(
        f"\nedgeward open-loop latency: gateway saturation {sat:.0f} req/s closed loop (32 in flight); "
        f"{args.duration:g} s per server and rate, {args.channels} channels, loopback, uvloop, {cores}, "
        f"best of {args.rounds} rounds by p99"
    )
    print(
        f"{'load':>5} {'offered':>8} {'server':<8} {'achieved':>8} {'p50 ms':>7} {'p99 ms':>7} {'p99.9 ms':>8} "
        f"{'CPU µs/req':>10} {'in flight':>9} {'p99 over rounds':>16} {'send late p99':>13} {'failed':>6}"
    )
    rates, notes = [], []
    for percent, by_kind in runs.items():
        row: dict[str, Any] = {"percent": percent, "offered_rps": sat * percent / 100}
        for kind, kind_runs in by_kind.items():
            best = _best(kind_runs)
            p99s = [run["p99_ms"] for run in kind_runs]
            row[kind] = best
            row[f"{kind}_runs"] = kind_runs
            print(
                f"{percent:>4}% {row['offered_rps']:>8.0f} {kind:<8} {best['achieved_rps']:>8.0f} "
                f"{best['p50_ms']:>7.2f} {best['p99_ms']:>7.2f} {best['p999_ms']:>8.2f} "
                f"{best['cpu_us_per_request']:>10.1f} {best['max_in_flight']:>9.0f} "
                f"{f'{min(p99s):.2f}-{max(p99s):.2f}':>16} {best['send_late_p99_ms']:>13.2f} {best['failures']:>6}"
            )
            if best["failures"]:
                notes.append(f"  {kind} at {percent}%: failed {best['failure_codes']}, first: {best['first_failure']}")
        rates.append(row)
    if notes:
        print("\n".join(notes))
    at = runs[BUDGET_PERCENT]
    gateway, echo = _best(at["gateway"]), _best(at["echo"])
    ratio = gateway["p99_ms"] / echo["p99_ms"]
    per_round = [g["p99_ms"] / e["p99_ms"] for g, e in zip(at["gateway"], at["echo"], strict=True)]
    budget = BUDGETS["latency_p99"]
    met = budget.met(ratio) and not gateway["failures"] and not echo["failures"]  # a failed call has no p99
    rounds = f"round by round: {', '.join(f'{r:.2f}' for r in per_round)}"
    if args.echo_legs:  # not the budget's baseline: report the ratio, check nothing
        print(f"\ngateway p99 / echo-with-legs p99 at {BUDGET_PERCENT}%: {ratio:.2f} ({rounds}); budget not checked")
        met = True
    else:
        print(f"\nbudget latency_p99: {budget.describe()}: {ratio:.2f} {'ok' if met else 'MISSED'} ({rounds})")
    result = {
        "saturation_rps": sat, "saturation": saturation, "duration_s": args.duration, "rounds": args.rounds,
        "channels": args.channels, "echo_legs": args.echo_legs, "rates": rates,
        "p99_ratio_at_50": ratio, "p99_ratio_at_50_by_round": per_round,
        "budget": budget.describe(), "budget_met": None if args.echo_legs else met,
    }
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    draw(result, Path(args.plot))
    print(f"written: {path}, {args.plot}")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
