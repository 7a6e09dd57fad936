"""Workers benchmark: throughput and CPU per request of ``edgeward serve`` with 1 and with 2 workers.

``python -m bench.workers`` starts, on loopback, a private redis-server and the stub backend, then
in alternating rounds ``edgeward serve --workers 1`` and ``--workers 2`` (Redis replay store and
limiter both times, so only the process count differs), native and then pure-Python
(``EDGEWARD_NO_EXTENSIONS=1``). A separate load generator
(bench/workers/loadgen.py) sends pre-signed ExecuteCommand requests over 8 connections, 32 in
flight, and reads the CPU time of the whole server process tree (supervisor included) and its own.

Nothing is pinned: the point is what a host gains from a second worker, and on a 2-core machine
the load generator, the stub backend and Redis share both cores with the workers. Read the
figures with that in mind: the load generator is one Python process and may itself be the limit.
Each configuration's figures are from its round with the highest throughput.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from bench.stack import BUDGETS_NEVER_REFUSE, ROOT, redis_and_stub, stop
from edgeward.devtools.ports import free_ports, wait_listening

_CONFIGS = (("native", 1), ("native", 2), ("pure", 1), ("pure", 2))


def _run(args: argparse.Namespace, env: dict[str, str], config: tuple[str, int], others: list[int]) -> dict[str, Any]:
    twin, workers = config
    ports = free_ports("grpc", "public", "admin")
    genv = env | ({"EDGEWARD_NO_EXTENSIONS": "1"} if twin == "pure" else {}) | {
        "EDGEWARD_GRPC_ADDR": f"127.0.0.1:{ports['grpc']}",
        "EDGEWARD_PUBLIC_HTTP_ADDR": f"127.0.0.1:{ports['public']}",
        "EDGEWARD_ADMIN_HTTP_ADDR": f"127.0.0.1:{ports['admin']}",
        "EDGEWARD_WORKERS": str(workers),
    }
    proc = subprocess.Popen([sys.executable, "-m", "edgeward", "serve"], env=genv, cwd=ROOT)
    try:
        wait_listening(ports["grpc"], proc, what="gateway")
        wait_listening(ports["admin"], proc, what="admin listener")
        if workers > 1:  # the supervisor's admin port opens before its workers serve
            _wait_ready(ports["admin"], proc)
        cmd = [
            sys.executable, "-m", "bench.workers.loadgen", "--target", f"127.0.0.1:{ports['grpc']}",
            "--pid", str(proc.pid), "--public-url", f"http://127.0.0.1:{ports['public']}",
            "--backend-url", env["EDGEWARD_BACKEND_BASE_URL"], "--requests", str(args.requests),
            "--warmup", str(args.warmup), "--concurrency", str(args.concurrency), "--channels", str(args.channels),
        ]
        for pid in others:
            cmd += ["--other", str(pid)]
        out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900, check=False)
        if out.returncode != 0:
            raise RuntimeError(f"load generator failed:\n{out.stderr}")
        result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
        if result["failures"]:
            raise RuntimeError(
                f"{twin}, {workers} workers: {result['failures']:.0f} requests failed: {result['failure_codes']}"
            )
        return result
    finally:
        stop(proc)


def _wait_ready(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.1)
    raise RuntimeError("the workers did not become ready")


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.workers", description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--warmup", type=int, default=1_000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--channels", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", default=str(ROOT / "bench" / "results" / "workers.json"))
    args = parser.parse_args()
    runs: dict[tuple[str, int], list[dict[str, Any]]] = {config: [] for config in _CONFIGS}
    with redis_and_stub("workers") as (redis, stub):
        env = stub.env | {
            "EDGEWARD_REDIS_URL": redis.url,
            "EDGEWARD_LIMITER_REDIS_URL": redis.url,  # the same limiter with 1 worker as with 2
            **BUDGETS_NEVER_REFUSE,
            "EDGEWARD_PUBLIC_LIMIT_IP": "off",  # every run logs its sessions in from this one address
        }
        assert stub.proc is not None and redis.proc is not None
        others = [stub.proc.pid, redis.proc.pid]
        for _ in range(args.rounds):
            for config, results in runs.items():
                results.append(_run(args, env, config, others))
    best = {config: max(results, key=lambda r: r["requests_per_s"]) for config, results in runs.items()}
    cores = len(os.sched_getaffinity(0))
    print(
        f"edgeward workers: {args.requests} requests, {args.concurrency} in flight over {args.channels} connections, "
        f"loopback, {cores} cores shared by everything, best of {args.rounds} rounds by throughput"
    )
    print(f"{'':20}{'req/s':>8}{'gateway CPU µs/req':>20}{'loadgen':>10}{'stub+Redis':>12}{'cores busy':>12}")
    for (twin, workers), r in best.items():
        print(
            f"{twin + ', ' + str(workers) + ' worker' + ('s' if workers > 1 else ''):<20}{r['requests_per_s']:>8.0f}"
            f"{r['cpu_us_per_request']:>20.1f}"
            f"{r['loadgen_cpu_us_per_request']:>10.1f}{r['others_cpu_us_per_request']:>12.1f}"
            f"{r['machine_busy'] * cores:>12.2f}"
        )
    print("all rounds (req/s):", {_name(c): [round(r["requests_per_s"]) for r in rs] for c, rs in runs.items()})
    report = {"best": {_name(c): r for c, r in best.items()}, "runs": {_name(c): rs for c, rs in runs.items()}}
    Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0


def _name(config: tuple[str, int]) -> str:
    """A configuration's key in the JSON report: "native 1", "pure 2"."""
    return f"{config[0]} {config[1]}"


if __name__ == "__main__":
    raise SystemExit(main())
