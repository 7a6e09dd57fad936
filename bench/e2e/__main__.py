"""End-to-end benchmark: the gateway's CPU per ExecuteCommand, next to what it cannot avoid.

``python -m bench.e2e`` (or ``make bench``) starts, on loopback: a private redis-server, the
stub backend, then in turn the native gateway, the pure-Python gateway (EDGEWARD_NO_EXTENSIONS=1)
and a bare grpc.aio echo server. A separate load-generator process sends each of them the same
number of pre-signed requests with the same number in flight and reads the server's CPU time
from /proc. The baseline is the echo server's CPU per request plus one raw Ed25519 verify and one
raw sign, the least any verifying, signing gateway on grpc.aio could spend. The difference is
accounted for in place, by gateways with one stage replaced by a no-op (bench/e2e/ablated_gateway.py)
measured in the same rounds, and alone, stage by stage (bench/e2e/stages.py). Everything is
measured in this run; the table is printed and written as JSON, and the run fails if the native
gateway misses the ``e2e_cpu`` budget (bench/budgets.py).

On a machine with two or more cores the measured server runs alone on core 0 and everything
else (load generator, stub backend, Redis, this process) on core 1, so the gateway and the echo
server are measured under the same conditions although only the gateway has neighbours to talk
to. The servers are measured in alternating rounds and each figure is its best round: load from
outside the benchmark only ever adds CPU time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import uvloop

from bench.budgets import BUDGETS
from bench.e2e.ablated_gateway import STAGES
from bench.e2e.echo_server import Crypto
from bench.stack import GATEWAY_SEED, ROOT, SERVER_CORE, Stub, move_to_other_cores, on_server_core, stop
from edgeward.client import build_signed_request
from edgeward.devtools.ports import free_port, wait_listening
from edgeward.native import _crypto_c
from tests.support.redis_server import RedisServer

PAYLOAD = b'{"n":42,"text":"' + b"x" * 120 + b'"}'
_IN_PLACE_NAMES = {
    "crypto": "Ed25519 verify + response encode + sign",
    "replay": "replay reservation (Redis)",
    "backend": "backend call",
    "protection": "budgets + pre-auth guard + request metrics",
}


def _best(runs: list[dict[str, float]]) -> dict[str, float]:
    return min(runs, key=lambda run: run["cpu_us_per_request"])


def _loadgen(args: argparse.Namespace, mode: str, target: str, pid: int, **extra: str) -> dict[str, float]:
    cmd = [
        sys.executable, "-m", "bench.e2e.loadgen", "--mode", mode, "--target", target, "--pid", str(pid),
        "--requests", str(args.requests), "--warmup", str(args.warmup), "--concurrency", str(args.concurrency),
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
    ports = {name: free_port() for name in ("grpc", "public", "admin")}
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
            args, "gateway", f"127.0.0.1:{ports['grpc']}", proc.pid,
            public_url=f"http://127.0.0.1:{ports['public']}", backend_url=env["EDGEWARD_BACKEND_BASE_URL"],
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
        env=env, cwd=ROOT, stdout=subprocess.PIPE, text=True, preexec_fn=on_server_core,
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


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.e2e", description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--warmup", type=int, default=1_000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds; each figure is its best")
    parser.add_argument("--json", default=str(ROOT / "bench" / "results" / "e2e.json"))
    args = parser.parse_args()
    move_to_other_cores()  # inherited by Redis, the stub and the load generator

    redis = RedisServer()
    redis.start()
    stub = Stub(Path(tempfile.mkdtemp(prefix="edgeward-e2e-")))
    big = "1000000000:1000000000"  # budgets stay on (their cost is measured) but never refuse
    env = stub.env | {
        "EDGEWARD_REDIS_URL": redis.url,
        "EDGEWARD_BUDGET_IP": big,
        "EDGEWARD_BUDGET_SESSION": big,
        "EDGEWARD_BUDGET_USER": big,
        "EDGEWARD_BUDGET_MESSAGE_TYPE": big,
    }
    try:
        stub.start()
        public_key_hex = _crypto_c.Signer(GATEWAY_SEED).public_key.hex()
        natives, pures, echoes, legged, floors = [], [], [], [], []
        ablated_runs: dict[str, list[dict[str, float]]] = {stage: [] for stage in STAGES}
        for _ in range(args.rounds):
            natives.append(_run_gateway(args, env, pure=False, public_key_hex=public_key_hex))
            echoes.append(_run_echo(args, env))
            for stage, runs in ablated_runs.items():
                runs.append(_run_gateway(args, env, pure=False, public_key_hex=public_key_hex, without=stage))
            legged.append(_run_echo(args, env, legs=True))
            floors.append(_run_echo(args, env, legs=True, crypto=True))
            pures.append(_run_gateway(args, env, pure=True, public_key_hex=public_key_hex))
        native, pure, echo, echo_legs, floor = _best(natives), _best(pures), _best(echoes), _best(legged), _best(floors)
        ablated = {stage: _best(runs) for stage, runs in ablated_runs.items()}
        verify_us, sign_us = _raw_crypto_us()
        stages = _stage_breakdown(args, stub.base_url, redis.url)
    finally:
        stub.stop()
        redis.close()
    return _report(args, native, pure, echo, echo_legs, floor, ablated, verify_us, sign_us, stages)


def _report(
    args: argparse.Namespace,
    native: dict[str, float],
    pure: dict[str, float],
    echo: dict[str, float],
    echo_legs: dict[str, float],
    floor: dict[str, float],
    ablated: dict[str, dict[str, float]],
    verify_us: float,
    sign_us: float,
    stages: dict[str, float],
) -> int:
    baseline = echo["cpu_us_per_request"] + verify_us + sign_us
    ratio = native["cpu_us_per_request"] / baseline
    budget = BUDGETS["e2e_cpu"]
    rows = [
        ("bare grpc.aio echo", echo["cpu_us_per_request"], echo["requests_per_s"]),
        ("raw Ed25519 verify + raw sign", verify_us + sign_us, None),
        ("baseline: echo + verify + sign", baseline, None),
        ("echo + Redis SET + backend POST", echo_legs["cpu_us_per_request"], echo_legs["requests_per_s"]),
        ("  ... + verify + sign", echo_legs["cpu_us_per_request"] + verify_us + sign_us, None),
        ("  ... + verify + sign, in place", floor["cpu_us_per_request"], floor["requests_per_s"]),
        ("native gateway", native["cpu_us_per_request"], native["requests_per_s"]),
        ("pure-Python gateway", pure["cpu_us_per_request"], pure["requests_per_s"]),
    ]
    cores = "server alone on core 0" if SERVER_CORE is not None else "one core shared"
    print(
        f"\nedgeward end to end: {args.requests} requests, {args.concurrency} in flight, loopback, uvloop, "
        f"{cores}, best of {args.rounds} rounds"
    )
    print(f"{'':<34} {'CPU µs/req':>10} {'x baseline':>10} {'req/s':>8}")
    for name, cpu, rps in rows:
        print(f"{name:<34} {cpu:>10.1f} {cpu / baseline:>10.2f} {'' if rps is None else f'{rps:>8.0f}'}")
    total = native["cpu_us_per_request"]
    in_place = {stage: total - ablated[stage]["cpu_us_per_request"] for stage in STAGES}
    print(
        "\nnative gateway, where the CPU goes in place (µs/req): the native gateway minus the gateway with "
        "that stage\nreplaced by a no-op (bench/e2e/ablated_gateway.py), both best of the same rounds"
    )
    rest = total - echo["cpu_us_per_request"] - sum(in_place.values())
    for name, cpu in [
        ("gRPC server + HTTP/2 + asyncio (echo)", echo["cpu_us_per_request"]),
        *((_IN_PLACE_NAMES[stage], in_place[stage]) for stage in STAGES),
        ("the rest: decode, session cache, pipeline, gRPC handler", rest),
        ("total (native gateway)", total),
    ]:
        print(f"  {name:<56} {cpu:>8.1f}")
    print(
        f"  (the two I/O legs in an echo server: {echo_legs['cpu_us_per_request'] - echo['cpu_us_per_request']:.1f} "
        f"µs; raw verify + sign alone: {verify_us + sign_us:.1f} µs)"
    )
    print("\nthe same stages measured alone in this process (stages.py; µs/req):")
    for name, cpu in stages.items():
        print(f"  {name:<56} {cpu:>8.1f}")
    met = budget.met(ratio)
    print(f"\nbudget e2e_cpu: {budget.describe()}: {ratio:.2f} {'ok' if met else 'MISSED'}")
    print(
        f"  (the floor, an echo server making both I/O legs and verifying and signing in place: "
        f"{floor['cpu_us_per_request'] / baseline:.2f})"
    )
    result = {
        "requests": args.requests, "concurrency": args.concurrency,
        "echo": echo, "echo_with_io_legs": echo_legs, "echo_with_io_legs_and_crypto": floor,
        "native": native, "pure": pure,
        "raw_verify_us": verify_us, "raw_sign_us": sign_us, "baseline_us": baseline,
        "native_vs_baseline": ratio, "pure_vs_baseline": pure["cpu_us_per_request"] / baseline,
        "floor_vs_baseline": floor["cpu_us_per_request"] / baseline,
        "stages_us": stages, "in_place_us": in_place, "ablated": ablated,
        "budget": budget.describe(), "budget_met": met,
    }
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written: {path}")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
