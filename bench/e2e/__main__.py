"""End-to-end benchmark: the gateway's CPU per ExecuteCommand, next to what it cannot avoid.

``python -m bench.e2e`` (or ``make bench``) starts, on loopback: a private redis-server, the
stub backend, then in turn the native gateway, a bare grpc.aio echo server, the in-place floor,
the pure-Python gateway (EDGEWARD_NO_EXTENSIONS=1) and the gateway with one stage replaced by a
no-op (bench/e2e/ablated_gateway.py). A separate load-generator process sends each of them the
same number of pre-signed requests with the same number in flight (closed loop: saturation) and
reads the server's CPU time and its main thread's context switches from /proc.

The two baselines:
- the bare echo: what gRPC, HTTP/2 and asyncio cost per call before any gateway logic;
- the in-place floor: the echo server making the gateway's two I/O legs with the gateway's own
  clients (a Redis SET NX PX, a backend POST) and one Ed25519 verify and one sign, all in place
  (bench/e2e/echo_server.py ``--legs --crypto``): what any verifying, forwarding, signing
  gateway on grpc.aio cannot avoid. The gateway / floor ratio is the gateway's own Python.

Every server is measured once per round, the rounds alternate, and each budget (bench/budgets.py:
``gateway_vs_floor``, ``gateway_vs_echo``) is checked against the median of the per-round
ratios, printed with its minimum and maximum (bench/spread.py). The stage breakdown in place is,
per round, the native gateway minus the gateway without that stage; it is the difference of two
noisy figures, so its spread is printed too. The table is printed and written as JSON.

On a machine with two or more cores the measured server runs alone on core 0 and everything
else (load generator, stub backend, Redis, this process) on core 1, so the gateway and the echo
server are measured under the same conditions although only the gateway has neighbours to talk
to.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import uvloop

from bench.budgets import BUDGETS
from bench.e2e.ablated_gateway import STAGES
from bench.e2e.echo_server import Crypto
from bench.spread import Spread
from bench.stack import (
    BUDGETS_NEVER_REFUSE,
    GATEWAY_SEED,
    ROOT,
    SERVER_CORE,
    move_to_other_cores,
    on_server_core,
    redis_and_stub,
    stop,
)
from edgeward.client import build_signed_request
from edgeward.devtools.ports import free_ports, wait_listening
from edgeward.native import _crypto_c

PAYLOAD = b'{"n":42,"text":"' + b"x" * 120 + b'"}'
_IN_PLACE_NAMES = {
    "crypto": "Ed25519 verify + response encode + sign",
    "replay": "replay claim + kept answer (Redis)",
    "detach": "step 8 detached (task + shield)",
    "backend": "backend call",
    "protection": "budgets + pre-auth guard + request metrics",
}


def _loadgen(args: argparse.Namespace, mode: str, target: str, pid: int, **extra: str) -> dict[str, float]:
    cmd = [
        sys.executable,
        "-m",
        "bench.e2e.loadgen",
        "--mode",
        mode,
        "--target",
        target,
        "--pid",
        str(pid),
        "--requests",
        str(args.requests),
        "--warmup",
        str(args.warmup),
        "--concurrency",
        str(args.concurrency),
    ]
    for key, value in extra.items():
        cmd += [f"--{key.replace('_', '-')}", value]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"load generator failed:\n{out.stderr}")
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    if result["failures"]:
        raise RuntimeError(f"{mode}: {result['failures']:.0f} requests failed")
    return result


def _run_gateway(
    args: argparse.Namespace, env: dict[str, str], pure: bool, public_key_hex: str, without: str | None = None
) -> dict[str, float]:
    """One gateway run; ``without`` names a stage replaced by a no-op (bench/e2e/ablated_gateway.py)."""
    ports = free_ports("grpc", "public", "admin")
    genv = env | {
        "EDGEWARD_GRPC_ADDR": f"127.0.0.1:{ports['grpc']}",
        "EDGEWARD_PUBLIC_HTTP_ADDR": f"127.0.0.1:{ports['public']}",
        "EDGEWARD_ADMIN_HTTP_ADDR": f"127.0.0.1:{ports['admin']}",
        "EDGEWARD_LOG_LEVEL": "WARNING",
    }
    if pure:
        genv["EDGEWARD_NO_EXTENSIONS"] = "1"
    command = ["-m", "edgeward", "serve"] if without is None else ["-m", "bench.e2e.ablated_gateway", without]
    proc = subprocess.Popen([sys.executable, *command], env=genv, cwd=ROOT, preexec_fn=on_server_core)
    try:
        wait_listening(ports["grpc"], proc, what="gateway")
        wait_listening(ports["public"], proc, what="gateway public listener")
        return _loadgen(
            args,
            "gateway",
            f"127.0.0.1:{ports['grpc']}",
            proc.pid,
            public_url=f"http://127.0.0.1:{ports['public']}",
            backend_url=env["EDGEWARD_BACKEND_BASE_URL"],
            gateway_public_key=public_key_hex,
        )
    finally:
        stop(proc)


def _run_echo(
    args: argparse.Namespace, env: dict[str, str], legs: bool = False, crypto: bool = False
) -> dict[str, float]:
    extra = ["--crypto"] if crypto else []
    if legs:
        extra += ["--legs", "--redis-url", env["EDGEWARD_REDIS_URL"], "--backend-url", env["EDGEWARD_BACKEND_BASE_URL"]]
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.e2e.echo_server", *extra],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        preexec_fn=on_server_core,
    )
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        return _loadgen(args, "echo", f"127.0.0.1:{port}", proc.pid)
    finally:
        stop(proc)


def _raw_crypto_us() -> tuple[float, float]:
    """Best-of-rounds µs of one raw libsodium verify and one raw sign of the input the floor uses."""
    crypto = Crypto()
    signer, message, signature = crypto.signer, crypto.message, crypto.signature
    verify, key = _crypto_c.verify, signer.public_key

    def best(fn: Any, number: int = 500) -> float:
        rounds = []
        for _ in range(15):
            start = time.process_time()
            for _ in range(number):
                fn()
            rounds.append((time.process_time() - start) / number * 1e6)
        return min(rounds)

    return best(lambda: verify(key, message, signature)), best(lambda: signer.sign(message))


def _stage_breakdown(args: argparse.Namespace, backend_url: str, redis_url: str) -> dict[str, float]:
    from bench.e2e.stages import measure_stages  # noqa: PLC0415  (imports the gateway's twins: native here)

    client = _crypto_c.Signer(bytes(range(32)))
    request = build_signed_request(client, "dsn_bench", "user.echo", PAYLOAD).SerializeToString()
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(measure_stages(request, client.public_key, backend_url, redis_url, args.concurrency))


Runs = list[dict[str, float]]
_SERVERS = ("echo", "echo_legs", "floor", "native", "pure")


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.e2e", description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--warmup", type=int, default=1_000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds; budgets take the median ratio")
    parser.add_argument("--json", default=str(ROOT / "bench" / "results" / "e2e.json"))
    args = parser.parse_args()
    move_to_other_cores()  # inherited by Redis, the stub and the load generator

    with redis_and_stub("e2e") as (redis, stub):
        env = stub.env | {
            "EDGEWARD_REDIS_URL": redis.url,
            **BUDGETS_NEVER_REFUSE,
        }
        public_key_hex = _crypto_c.Signer(GATEWAY_SEED).public_key.hex()
        runs: dict[str, Runs] = {name: [] for name in (*_SERVERS, *STAGES)}
        for _ in range(args.rounds):
            # The gateway and its two baselines back to back, so each round's ratios compare
            # runs that met the same neighbours.
            runs["native"].append(_run_gateway(args, env, pure=False, public_key_hex=public_key_hex))
            runs["echo"].append(_run_echo(args, env))
            runs["floor"].append(_run_echo(args, env, legs=True, crypto=True))
            runs["echo_legs"].append(_run_echo(args, env, legs=True))
            for stage in STAGES:
                runs[stage].append(_run_gateway(args, env, pure=False, public_key_hex=public_key_hex, without=stage))
            runs["pure"].append(_run_gateway(args, env, pure=True, public_key_hex=public_key_hex))
        verify_us, sign_us = _raw_crypto_us()
        stages = _stage_breakdown(args, stub.base_url, redis.url)
    return _report(args, runs, verify_us, sign_us, stages)


def _cpu(runs: Runs) -> list[float]:
    return [run["cpu_us_per_request"] for run in runs]


def _figure(runs: Runs, key: str = "cpu_us_per_request") -> Spread:
    return Spread.of([run[key] for run in runs])


def _report(
    args: argparse.Namespace, runs: dict[str, Runs], verify_us: float, sign_us: float, stages: dict[str, float]
) -> int:
    echo, floor = _cpu(runs["echo"]), _cpu(runs["floor"])
    rows = [
        ("bare grpc.aio echo", "echo"),
        ("echo + Redis SET + backend POST", "echo_legs"),
        ("in-place floor: ... + verify + sign", "floor"),
        ("native gateway", "native"),
        ("pure-Python gateway", "pure"),
    ]
    cores = "server alone on core 0" if SERVER_CORE is not None else "one core shared"
    print(
        f"\nedgeward end to end: {args.requests} requests, {args.concurrency} in flight (saturation), loopback, "
        f"uvloop, {cores}, {args.rounds} alternating rounds;\neach figure: median [min-max] over the rounds; "
        "ratios are taken round by round"
    )
    print(f"{'':<36} {'CPU µs/req':>20} {'x echo':>17} {'x floor':>17} {'req/s':>7} {'wake-ups/req':>18}")
    for name, key in rows:
        cpu = _cpu(runs[key])
        switches = [
            _figure(runs[key], f"{name}_per_request").median
            for name in ("main_voluntary_switches", "main_involuntary_switches", "thread_wake_ups")
        ]
        print(
            f"{name:<36} {Spread.of(cpu).show(1):>20} {Spread.ratios(cpu, echo).show():>17} "
            f"{Spread.ratios(cpu, floor).show():>17} {_figure(runs[key], 'requests_per_s').median:>7.0f} "
            f"{'{:.1f} + {:.1f} | {:.1f}'.format(*switches):>18}"
        )
    print(
        f"{'raw Ed25519 verify + raw sign':<36} {verify_us + sign_us:>20.1f}   (one raw libsodium call each, "
        "in this process)\n(wake-ups: the server main thread's voluntary + involuntary context switches | "
        "its other threads' wake-ups, mostly grpc.aio's completion-queue poller)"
    )
    in_place = _in_place(runs)
    print(
        "\nnative gateway, where the CPU goes in place (µs/req, median [min-max] of the per-round difference\n"
        "between the native gateway and the gateway with that stage replaced by a no-op, ablated_gateway.py;\n"
        "a difference of two noisy figures: read the spread before the median)"
    )
    for name, spread in in_place.items():
        print(f"  {name:<56} {spread.show(1):>22}")
    print(
        f"  (the two I/O legs in an echo server: "
        f"{Spread.of([a - b for a, b in zip(_cpu(runs['echo_legs']), echo, strict=True)]).show(1)} µs; "
        f"raw verify + sign alone: {verify_us + sign_us:.1f} µs)"
    )
    print("\nthe same stages measured alone in this process (stages.py; µs/req):")
    for name, alone in stages.items():
        print(f"  {name:<56} {alone:>8.1f}")
    checks = {
        "gateway_vs_floor": Spread.ratios(_cpu(runs["native"]), floor),
        "gateway_vs_echo": Spread.ratios(_cpu(runs["native"]), echo),
    }
    print()
    all_met = True
    for name, spread in checks.items():
        budget = BUDGETS[name]
        met = budget.met(spread.median)
        all_met &= met
        print(f"budget {name}: {budget.describe()}: {spread.show()} {'ok' if met else 'MISSED'}")
    pure = {
        "pure_vs_floor": Spread.ratios(_cpu(runs["pure"]), floor),
        "pure_vs_echo": Spread.ratios(_cpu(runs["pure"]), echo),
    }
    print(
        f"  (pure-Python gateway, no budget: / floor {pure['pure_vs_floor'].show()}, "
        f"/ echo {pure['pure_vs_echo'].show()})"
    )
    result = {
        "requests": args.requests,
        "concurrency": args.concurrency,
        "rounds": args.rounds,
        "runs": runs,
        "raw_verify_us": verify_us,
        "raw_sign_us": sign_us,
        "stages_alone_us": stages,
        "in_place_us": {name: spread.as_json() for name, spread in in_place.items()},
        "ratios": {name: spread.as_json() for name, spread in (checks | pure).items()},
        "budgets": {
            name: {"budget": BUDGETS[name].describe(), "met": BUDGETS[name].met(spread.median)}
            for name, spread in checks.items()
        },
    }
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written: {path}")
    return 0 if all_met else 1


def _in_place(runs: dict[str, Runs]) -> dict[str, Spread]:
    """Per round: what each stage costs in place, gRPC's share (the echo) and what is left."""
    native, echo = _cpu(runs["native"]), _cpu(runs["echo"])
    stage_costs = {stage: [n - a for n, a in zip(native, _cpu(runs[stage]), strict=True)] for stage in STAGES}
    rest = [
        total - grpc - sum(costs[i] for costs in stage_costs.values())
        for i, (total, grpc) in enumerate(zip(native, echo, strict=True))
    ]
    return {
        "gRPC server + HTTP/2 + asyncio (echo)": Spread.of(echo),
        **{_IN_PLACE_NAMES[stage]: Spread.of(costs) for stage, costs in stage_costs.items()},
        "the rest: decode, session cache, pipeline, gRPC handler": Spread.of(rest),
        "total (native gateway)": Spread.of(native),
    }


if __name__ == "__main__":
    sys.exit(main())
