"""The load generator: a separate process sending pre-signed ExecuteCommand requests.

Every request is built and signed before the clock starts, so the measured window holds only
sending and receiving. After a warm-up (sessions cached, connections open), it reads the
server process's CPU time from /proc, sends the measured requests with a fixed number in flight,
reads the CPU time again, and prints one JSON line: CPU microseconds per request, req/s, and the
server's context switches per request (its wake-ups, ``context_switches``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time

import grpc
import orjson
import uvloop

from edgeward._pb import gateway_pb2
from edgeward.client import build_signed_request, login_with_stub_mailbox, verify_response
from edgeward.native.crypto import Signer

EXECUTE = "/edgeward.v1.EdgeGateway/ExecuteCommand"
PAYLOAD = orjson.dumps({"text": "x" * 120, "n": 42})
_TICKS = os.sysconf("SC_CLK_TCK")


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU of every thread of ``pid`` so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def context_switches(pid: int) -> tuple[int, int, int]:
    """Context switches of ``pid`` so far: its main thread's voluntary and involuntary, and its
    other threads' voluntary ones.

    The main thread runs the event loop: a voluntary switch is the loop going to sleep in epoll
    with nothing to do, an involuntary one a preemption, mostly by the process's own threads on
    the same core. Another thread's voluntary switch is that thread going back to sleep after a
    wake-up: for grpc.aio, its completion-queue poller waking once per completion (docs/performance.md).
    """
    main_voluntary = main_involuntary = others_voluntary = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                counts = dict(line.split(":", 1) for line in f if "ctxt_switches" in line)
        except FileNotFoundError:  # the thread ended meanwhile
            continue
        if int(tid) == pid:
            main_voluntary = int(counts["voluntary_ctxt_switches"])
            main_involuntary = int(counts["nonvoluntary_ctxt_switches"])
        else:
            others_voluntary += int(counts["voluntary_ctxt_switches"])
    return main_voluntary, main_involuntary, others_voluntary


def switches_per_request(before: tuple[int, int, int], after: tuple[int, int, int], count: int) -> dict[str, float]:
    names = ("main_voluntary_switches", "main_involuntary_switches", "thread_wake_ups")
    return {f"{name}_per_request": (a - b) / count for name, a, b in zip(names, after, before, strict=True)}


async def _requests(args: argparse.Namespace, count: int) -> list[bytes]:
    if args.mode == "echo":
        signer = Signer(bytes(32))
        return [
            build_signed_request(signer, "dsn_echo", "user.echo", PAYLOAD).SerializeToString() for _ in range(count)
        ]
    sessions = []
    for i in range(args.sessions):
        signer = Signer.generate()
        dsid = await login_with_stub_mailbox(args.public_url, args.backend_url, f"load{i}@example.com", signer)
        sessions.append((signer, dsid))
    return [
        build_signed_request(*sessions[i % len(sessions)], "user.echo", PAYLOAD).SerializeToString()
        for i in range(count)
    ]


async def _send_all(channel: grpc.aio.Channel, requests: list[bytes], concurrency: int) -> int:
    call = channel.unary_unary(EXECUTE)
    pending = iter(requests)
    failures = 0

    async def worker() -> None:
        nonlocal failures
        for data in pending:
            try:
                await call(data, timeout=30)
            except grpc.aio.AioRpcError:
                failures += 1

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return failures


async def main(args: argparse.Namespace) -> dict[str, float]:
    requests = await _requests(args, args.warmup + args.requests)
    async with grpc.aio.insecure_channel(args.target) as channel:
        if args.mode == "gateway":  # the answers must verify, or the figures mean nothing
            first = gateway_pb2.ExecuteCommandResponse.FromString(await channel.unary_unary(EXECUTE)(requests[0]))
            envelope = gateway_pb2.ExecuteCommandRequest.FromString(requests[0]).envelope
            verify_response(first, bytes.fromhex(args.gateway_public_key), envelope.request_id)
            requests = requests[1:]
        failures = await _send_all(channel, requests[: args.warmup], args.concurrency)
        measured = requests[args.warmup :]
        switches0, cpu0, wall0 = context_switches(args.pid), process_cpu_seconds(args.pid), time.perf_counter()
        failures += await _send_all(channel, measured, args.concurrency)
        cpu1, wall1, switches1 = process_cpu_seconds(args.pid), time.perf_counter(), context_switches(args.pid)
    return {
        "requests": len(measured),
        "failures": failures,
        "cpu_us_per_request": (cpu1 - cpu0) / len(measured) * 1e6,
        "requests_per_s": len(measured) / (wall1 - wall0),
        **switches_per_request(switches0, switches1, len(measured)),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--mode", choices=("gateway", "echo"), required=True)
    parser.add_argument("--target", required=True)
    parser.add_argument("--pid", type=int, required=True, help="server process to measure")
    parser.add_argument("--public-url", default="")
    parser.add_argument("--backend-url", default="")
    parser.add_argument("--gateway-public-key", default="", help="hex")
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--warmup", type=int, default=1_000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--sessions", type=int, default=16)
    cli = parser.parse_args()
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        print(json.dumps(runner.run(main(cli))))
