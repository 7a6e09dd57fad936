"""The workers benchmark's load generator: pre-signed ExecuteCommand requests over several connections.

One gRPC channel is one connection, and the kernel places connections, not requests, on the
workers; so the load is spread over ``--channels`` channels. It reads the CPU time of the whole
server process tree (the supervisor and its workers, or the single gateway) and of itself around
the measured window, and prints one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from collections import Counter
from pathlib import Path
from typing import Any

import grpc
import uvloop

from bench.e2e.loadgen import PAYLOAD, process_cpu_seconds
from edgeward.client import build_signed_request, login_with_stub_mailbox
from edgeward.native.crypto import Signer

EXECUTE = "/edgeward.v1.EdgeGateway/ExecuteCommand"


def tree(pid: int) -> list[int]:
    """``pid`` and its descendants."""
    pids, i = [pid], 0
    while i < len(pids):
        for task in Path(f"/proc/{pids[i]}/task").iterdir():
            pids += [int(child) for child in (task / "children").read_text().split()]
        i += 1
    return pids


def tree_cpu_seconds(pids: list[int]) -> float:
    return sum(process_cpu_seconds(pid) for pid in pids)


def machine_busy_and_total() -> tuple[int, int]:
    """Busy and total jiffies of every core so far (/proc/stat; idle and iowait count as not busy)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    return sum(fields) - fields[3] - fields[4], sum(fields)


async def _requests(args: argparse.Namespace, count: int) -> list[bytes]:
    sessions = []
    for i in range(args.sessions):
        signer, email = Signer.generate(), f"load{i}.{os.getpid()}@example.com"
        sessions.append((signer, await login_with_stub_mailbox(args.public_url, args.backend_url, email, signer)))
    return [
        build_signed_request(*sessions[i % len(sessions)], "user.echo", PAYLOAD).SerializeToString()
        for i in range(count)
    ]


async def _send_all(
    channels: list[grpc.aio.Channel], requests: list[bytes], per_channel: int, failures: Counter[str]
) -> None:
    """Send every request; each failure is counted in ``failures`` by its status and details."""
    pending = iter(requests)

    async def sender(channel: grpc.aio.Channel) -> None:
        call = channel.unary_unary(EXECUTE)
        for data in pending:
            try:
                await call(data, timeout=30)
            except grpc.aio.AioRpcError as error:
                failures[f"{error.code().name}: {error.details()}"] += 1

    await asyncio.gather(*(sender(ch) for ch in channels for _ in range(per_channel)))


async def main(args: argparse.Namespace) -> dict[str, Any]:
    requests = await _requests(args, args.warmup + args.requests)
    # A local subchannel pool per channel, or grpcio shares one connection among them all and the
    # kernel places that one connection, so every request, on a single worker.
    options = [("grpc.use_local_subchannel_pool", 1)]
    channels = [grpc.aio.insecure_channel(args.target, options=options) for _ in range(args.channels)]
    try:
        per_channel = max(1, args.concurrency // args.channels)
        failures: Counter[str] = Counter()
        await _send_all(channels, requests[: args.warmup], per_channel, failures)
        measured = requests[args.warmup :]
        pids = tree(args.pid)
        own0, cpu0, wall0 = time.process_time(), tree_cpu_seconds(pids), time.perf_counter()
        rest0, (busy0, total0) = tree_cpu_seconds(args.other), machine_busy_and_total()
        await _send_all(channels, measured, per_channel, failures)
        own1, cpu1, wall1 = time.process_time(), tree_cpu_seconds(pids), time.perf_counter()
        rest1, (busy1, total1) = tree_cpu_seconds(args.other), machine_busy_and_total()
    finally:
        for channel in channels:
            await channel.close()
    return {
        "processes": len(pids),
        "requests": len(measured),
        "failures": sum(failures.values()),
        "failure_codes": dict(failures),  # warm-up included
        "cpu_us_per_request": (cpu1 - cpu0) / len(measured) * 1e6,
        "loadgen_cpu_us_per_request": (own1 - own0) / len(measured) * 1e6,
        "others_cpu_us_per_request": (rest1 - rest0) / len(measured) * 1e6,
        "machine_busy": (busy1 - busy0) / max(1, total1 - total0),
        "requests_per_s": len(measured) / (wall1 - wall0),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--target", required=True)
    parser.add_argument("--pid", type=int, required=True, help="the server: supervisor or single gateway")
    parser.add_argument("--public-url", required=True)
    parser.add_argument("--backend-url", required=True)
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--warmup", type=int, default=1_000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--channels", type=int, default=8)
    parser.add_argument("--sessions", type=int, default=16)
    parser.add_argument("--other", type=int, action="append", default=[], help="stub, Redis: also measured")
    cli = parser.parse_args()
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        print(json.dumps(runner.run(main(cli))))
