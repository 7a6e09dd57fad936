"""The subscriber side of the push benchmark: a separate process holding thousands of streams.

It logs devices in through the gateway's public auth, opens SubscribeEvents streams over many
channels, and measures three things against the gateway process (CPU and RSS read from /proc):
memory per idle stream, fan-out to 1,000 subscribers, and revocation-to-stream-end latency.
Events are counted, not verified (one is verified as a check): verifying hundreds of thousands of
Ed25519 signatures would make this process, not the gateway, the bottleneck.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import time
from typing import Any

import aiohttp
import grpc
import uvloop

from bench.e2e.loadgen import process_cpu_seconds
from edgeward._pb import gateway_pb2
from edgeward.client import SUBSCRIBE_MESSAGE_TYPE, build_signed_request, login_with_stub_mailbox, verify_event
from edgeward.native.crypto import Signer

_SUBSCRIBE = "/edgeward.v1.EdgeGateway/SubscribeEvents"
_STREAMS_PER_CHANNEL = 100


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * 4096


class Tally:
    """Events received by all streams; ``reached`` is set once ``target`` have arrived."""

    def __init__(self) -> None:
        self.count = 0
        self.target = -1
        self.reached = asyncio.Event()

    def add(self) -> None:
        self.count += 1
        if self.count == self.target:
            self.reached.set()


TALLY = Tally()


class Stream:
    """One open subscription: counts the events after server_time, remembers how it ended."""

    def __init__(self, channel: grpc.aio.Channel, signer: Signer, dsid: str) -> None:
        request = build_signed_request(
            signer, dsid, SUBSCRIBE_MESSAGE_TYPE, b"", request_cls=gateway_pb2.SubscribeEventsRequest
        )
        self.call = channel.unary_stream(_SUBSCRIBE)(request.SerializeToString())
        self.events = 0
        self.first: bytes | None = None
        self.started = asyncio.get_running_loop().create_future()
        self.ended_reason = ""
        self.debug = ""
        self.task = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        try:
            async for message in self.call:
                if self.first is None:
                    self.first = message
                    self.started.set_result(None)
                else:
                    self.events += 1
                    TALLY.add()
        except grpc.aio.AioRpcError as err:
            self.ended_reason = err.details() or err.code().name
            self.debug = err.debug_error_string()
        except asyncio.CancelledError:
            self.ended_reason = "cancelled"
        if not self.started.done():
            self.started.set_exception(RuntimeError(f"stream refused: {self.ended_reason} {self.debug}"))


async def _login(args: argparse.Namespace, count: int, email: str) -> list[tuple[Signer, str]]:
    devices = []
    for _ in range(count):
        signer = Signer.generate()
        devices.append((signer, await login_with_stub_mailbox(args.public_url, args.backend_url, email, signer)))
    return devices


async def _user_of(http: aiohttp.ClientSession, backend_url: str, dsid: str) -> str:
    async with http.get(f"{backend_url}/api/v1/internal/sessions/{dsid}") as resp:
        return str((await resp.json())["session"]["user_id"])


async def _open(channels: list[grpc.aio.Channel], devices: list[tuple[Signer, str]], count: int) -> list[Stream]:
    """``count`` streams, opened a channel's worth at a time (a burst of thousands gets CANCELLED)."""
    streams: list[Stream] = []
    for first in range(0, count, _STREAMS_PER_CHANNEL):
        batch = [
            Stream(channels[i // _STREAMS_PER_CHANNEL % len(channels)], *devices[i % len(devices)])
            for i in range(first, min(count, first + _STREAMS_PER_CHANNEL))
        ]
        await asyncio.wait_for(asyncio.gather(*(s.started for s in batch)), 60)
        streams += batch
    return streams


async def _fan_out(args: argparse.Namespace, http: aiohttp.ClientSession, user_id: str, streams: list[Stream]) -> Any:
    expected = args.events * len(streams)
    TALLY.count, TALLY.target = 0, expected
    cpu0, wall0 = process_cpu_seconds(args.pid), time.perf_counter()
    for i in range(args.events):
        body = {"user_id": user_id, "event_type": "bench.tick", "payload": {"i": i, "text": "x" * 64}}
        async with http.post(f"{args.backend_url}/api/v1/internal/stub/events", json=body) as resp:
            resp.raise_for_status()
    with contextlib.suppress(TimeoutError):  # reported below as delivered < expected
        await asyncio.wait_for(TALLY.reached.wait(), 300)
    wall1, cpu1 = time.perf_counter(), process_cpu_seconds(args.pid)
    delivered = sum(s.events for s in streams)
    return {
        "subscribers": len(streams), "events": args.events, "delivered": delivered, "expected": expected,
        "delivered_per_s": delivered / (wall1 - wall0),
        "gateway_cpu_us_per_delivered_event": (cpu1 - cpu0) / max(delivered, 1) * 1e6,
    }


async def _revocation_latency(args: argparse.Namespace, http: aiohttp.ClientSession, channel: grpc.aio.Channel) -> Any:
    devices = await _login(args, args.revocations, "revoke@example.com")
    streams = await _open([channel], devices, len(devices))
    latencies = []
    for (_, dsid), stream in zip(devices, streams, strict=True):
        start = time.perf_counter()
        async with http.post(f"{args.backend_url}/api/v1/internal/sessions/{dsid}/revoke", json={}) as resp:
            resp.raise_for_status()
        await asyncio.wait_for(stream.task, 30)
        latencies.append((time.perf_counter() - start) * 1000)
        if stream.ended_reason != "session_revoked":
            raise RuntimeError(f"a revoked stream ended with {stream.ended_reason!r}")
    cuts = statistics.quantiles(latencies, n=100)
    return {"revocations": len(latencies), "p50_ms": statistics.median(latencies), "p99_ms": cuts[98]}


async def main(args: argparse.Namespace) -> dict[str, Any]:
    # A full channel of idle streams each, and one more for the warm-up stream: a stream past the
    # gateway's per-connection cap (EDGEWARD_GRPC_MAX_CONCURRENT_STREAMS, 100) would wait for a slot.
    # Each channel its own connection: channels to one target otherwise share one (the global
    # subchannel pool), and every stream past the first 100 would wait.
    full = -(-args.idle_streams // _STREAMS_PER_CHANNEL)
    own_connection = [("grpc.use_local_subchannel_pool", 1)]
    channels = [grpc.aio.insecure_channel(args.target, options=own_connection) for _ in range(full + 1)]
    try:
        async with aiohttp.ClientSession() as http:
            devices = await _login(args, args.devices, "fanout@example.com")
            user_id = await _user_of(http, args.backend_url, devices[0][1])
            warm = await _open(channels[full:], devices[:1], 1)  # one stream first: lazy imports, channels
            event = gateway_pb2.GatewayEvent.FromString(warm[0].first or b"")
            verify_event(event, bytes.fromhex(args.gateway_public_key))  # the figures are of verified events
            rss0 = rss_bytes(args.pid)
            streams = await _open(channels[:full], devices, args.idle_streams)
            await asyncio.sleep(1.0)  # let allocations settle
            rss1 = rss_bytes(args.pid)
            memory = {"streams": len(streams), "rss_delta_bytes": rss1 - rss0,
                      "bytes_per_idle_stream": (rss1 - rss0) / len(streams)}
            for stream in [*warm, *streams[args.subscribers :]]:
                stream.call.cancel()
            await asyncio.gather(*(s.task for s in [*warm, *streams[args.subscribers :]]))
            await asyncio.sleep(1.0)  # the gateway notices the cancellations
            fan_out = await _fan_out(args, http, user_id, streams[: args.subscribers])
            for stream in streams[: args.subscribers]:
                stream.call.cancel()
            await asyncio.gather(*(s.task for s in streams[: args.subscribers]))
            latency = await _revocation_latency(args, http, channels[0])
    finally:
        for channel in channels:
            await channel.close(None)
    return {"memory": memory, "fan_out": fan_out, "revocation": latency}


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--target", required=True)
    parser.add_argument("--pid", type=int, required=True)
    parser.add_argument("--public-url", required=True)
    parser.add_argument("--backend-url", required=True)
    parser.add_argument("--gateway-public-key", required=True, help="hex")
    parser.add_argument("--devices", type=int, default=50)
    parser.add_argument("--idle-streams", type=int, default=5000)
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--events", type=int, default=200)
    parser.add_argument("--revocations", type=int, default=100)
    cli = parser.parse_args()
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        print(json.dumps(runner.run(main(cli))))
