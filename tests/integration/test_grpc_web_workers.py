"""The gRPC-Web listener under ``edgeward serve --workers 2`` (docs/grpc-web.md, "Workers").

Every worker binds ``EDGEWARD_GRPC_WEB_ADDR`` with SO_REUSEPORT, as it binds the gRPC and public
ports: fresh HTTP connections are spread by the kernel over both, each worker follows the backend's
push for the streams it holds, and the host's admin listener sums the workers' gRPC-Web counters.
Real processes (the supervisor tree of tests/integration/test_workers.py), real sockets, bounded waits.
"""

from __future__ import annotations

import asyncio
import re
import signal
from pathlib import Path

import aiohttp
import grpc
import orjson
import pytest

from edgeward._pb import gateway_pb2
from edgeward.client import GatewayError, build_signed_request, verify_event, verify_response
from edgeward.devtools.ports import free_port
from edgeward.native.keys import load_signer
from tests.integration.conftest import Device
from tests.integration.streams import eventually, post_event, revoke
from tests.integration.test_workers import WAIT_S, Host, HostFactory, sample, start_host
from tests.support.grpc_web_client import BINARY, TEXT, GrpcWebClient, WebStream

__all__ = ("start_host",)  # the fixture, imported to be used here

pytestmark = pytest.mark.asyncio(loop_factories=["asyncio"])  # the test process's loop only (test_workers.py)

EXECUTE = "/edgeward.v1.EdgeGateway/ExecuteCommand"
SUBSCRIBE = "/edgeward.v1.EdgeGateway/SubscribeEvents"
NO_BUDGETS = {
    "EDGEWARD_BUDGET_SESSION": "off", "EDGEWARD_BUDGET_USER": "off", "EDGEWARD_BUDGET_MESSAGE_TYPE": "off",
    "EDGEWARD_BUDGET_IP": "off",
}


async def web_host(start_host: HostFactory, **extra: str) -> tuple[Host, str]:
    """A host of 2 workers with the gRPC-Web listener on a fixed free port; the host and the listener's URL."""
    port = free_port()
    host = await start_host(EDGEWARD_GRPC_WEB_ADDR=f"127.0.0.1:{port}", **extra)
    return host, f"http://127.0.0.1:{port}"


def fresh() -> aiohttp.ClientSession:
    """A client that opens a new connection per request (the kernel picks a worker for each)."""
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True))


def web_calls(page: str, rpc: str, outcome: str = "ok") -> float:
    return sample(page, "edgeward_grpc_web_requests_total", outcome=outcome, rpc=rpc)


async def per_worker(host: Host, workers: list[dict[str, object]], name: str, **labels: str) -> list[float]:
    """One sample of each worker's own /metrics (its private admin port)."""
    pages = [(await host.admin("/metrics", int(str(w["admin_port"]))))[1] for w in workers]
    return [sample(page, name, **labels) for page in pages]


async def push_streams(host: Host) -> None:
    await eventually(
        lambda: len(set(re.findall(r"established \(gateway id (\S+)\)", host.output()))) == 2,
        "both workers' push streams",
    )


def subscription(device: Device) -> bytes:
    msg = build_signed_request(
        device.signer, device.device_session_id, "gateway.subscribe", b"",
        request_cls=gateway_pb2.SubscribeEventsRequest,
    )
    return bytes(msg.SerializeToString())


async def test_grpc_web_calls_are_served_by_both_workers_and_counted_by_the_host(
    start_host: HostFactory, tmp_path: Path
) -> None:
    host, url = await web_host(start_host)
    workers = await host.serving()
    key = load_signer(tmp_path / "gateway.key").public_key
    device = await host.login("web-workers@example.com")
    served = [0.0, 0.0]
    calls = 0
    async with fresh() as http:
        for content_type in [BINARY, TEXT] * 20:  # until both workers have answered, 40 at most
            request = device.request("user.echo", b'{"n": %d}' % calls)
            answer = await GrpcWebClient(http, url, content_type).unary(EXECUTE, request)
            calls += 1
            assert answer.trailers == {"grpc-status": "0", "grpc-message": ""}, answer.status()
            rid = gateway_pb2.ExecuteCommandRequest.FromString(request).envelope.request_id
            result = verify_response(gateway_pb2.ExecuteCommandResponse.FromString(answer.messages[0]), key, rid)
            assert result.json()["echo"] == {"n": calls - 1}
            served = await per_worker(host, workers, "edgeward_grpc_web_requests_total",
                                      outcome="ok", rpc="ExecuteCommand")
            if calls >= 4 and all(served):
                break
    assert all(served), f"every connection landed on one worker: {served}"
    assert sum(served) == calls
    status, total = await host.admin("/metrics")
    assert status == 200
    assert web_calls(total, "ExecuteCommand") == calls  # the host's sum of the workers' counters
    assert sample(total, "edgeward_requests_total", outcome="ok", rpc="ExecuteCommand") == calls  # gRPC-Web's are in it
    # The access lines name the transport and the worker (docs/logging.md): both workers logged gRPC-Web calls.
    lines = [orjson.loads(line) for line in host.output().splitlines() if line.startswith("{")]
    indexes = {line["worker"].get("index") for line in lines if line.get("transport") == "grpc-web"}
    assert indexes == {0, 1}, indexes


async def test_a_grpc_web_stream_on_each_worker_gets_the_users_events_until_revoked(
    start_host: HostFactory, tmp_path: Path
) -> None:
    host, url = await web_host(start_host)
    workers = await host.serving()
    await push_streams(host)
    key = load_signer(tmp_path / "gateway.key").public_key
    streams: list[tuple[Device, str, WebStream]] = []
    async with aiohttp.ClientSession() as http:
        try:
            holding = [0.0, 0.0]
            for n in range(20):  # a user and a stream each (its own connection), until both workers hold one
                device = await host.login(f"streams{n}@example.com")
                answer = await GrpcWebClient(http, url).unary(EXECUTE, device.request("user.echo"))
                user = orjson.loads(gateway_pb2.ExecuteCommandResponse.FromString(answer.messages[0]).payload_bytes)
                stream = await GrpcWebClient(http, url, TEXT).stream(SUBSCRIBE, subscription(device))
                streams.append((device, user["user_id"], stream))
                event = verify_event(gateway_pb2.GatewayEvent.FromString(await stream.message()), key)
                assert event.event_type == "gateway.server_time"
                holding = await per_worker(host, workers, "edgeward_streams_open")
                if all(holding):
                    break
            assert all(holding), f"every stream landed on one worker: {holding}"
            assert sum(holding) == len(streams)

            for _, user_id, stream in streams:  # each worker gets its users' events on its own push subscription
                position = await post_event(host.stub, user_id, {"to": user_id})
                event = verify_event(gateway_pb2.GatewayEvent.FromString(await stream.message()), key)
                assert (event.event_id, event.json()) == (position, {"to": user_id})
            for device, _, stream in streams:
                await revoke(host.stub, device)
                error = await stream.end()
                assert (error.code, error.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "session_revoked")
        finally:
            for _, _, stream in streams:
                stream.close()

    async def host_streams() -> float:
        return sample((await host.admin("/metrics"))[1], "edgeward_streams_open")

    deadline = asyncio.get_running_loop().time() + WAIT_S
    while (left := await host_streams()) != 0:  # the host's sum: every worker unregistered its streams
        assert asyncio.get_running_loop().time() < deadline, f"{left} streams still open"
        await asyncio.sleep(0.05)
    total = (await host.admin("/metrics"))[1]
    assert web_calls(total, "SubscribeEvents") == len(streams)


async def test_sighup_replaces_every_worker_while_grpc_web_calls_retried_on_connection_errors_all_succeed(
    start_host: HostFactory, tmp_path: Path
) -> None:
    host, url = await web_host(start_host, **NO_BUDGETS)
    old = {w["pid"] for w in await host.serving()}
    key = load_signer(tmp_path / "gateway.key").public_key
    devices = [await host.login(f"web-load{i}@example.com") for i in range(3)]
    stop = asyncio.Event()
    failed: list[GatewayError | str] = []
    retried: list[str] = []  # the connection errors a retry hid, by type
    ok = 0

    async def call(http: aiohttp.ClientSession, device: Device) -> None:
        """One command, resent as the same bytes on a connection error (safe: docs/replay.md)."""
        nonlocal ok
        request = device.request("user.echo")
        for _ in range(5):
            try:
                answer = await GrpcWebClient(http, url).unary(EXECUTE, request)
            except aiohttp.ClientConnectionError as exc:  # reset or closed by a retiring worker
                retried.append(type(exc).__name__)
                continue
            if answer.trailers is None:
                failed.append(answer.error())
                return
            rid = gateway_pb2.ExecuteCommandRequest.FromString(request).envelope.request_id
            verify_response(gateway_pb2.ExecuteCommandResponse.FromString(answer.messages[0]), key, rid)
            ok += 1
            return
        failed.append("5 connection errors in a row")

    async def load(device: Device, http: aiohttp.ClientSession) -> None:
        while not stop.is_set():
            await call(http, device)

    async with aiohttp.ClientSession() as kept, fresh() as churn:
        watcher = await host.login("web-watch@example.com")  # a stream open through the restart
        stream = await GrpcWebClient(kept, url).stream(SUBSCRIBE, subscription(watcher))
        assert verify_event(gateway_pb2.GatewayEvent.FromString(await stream.message()), key).event_type == (
            "gateway.server_time"
        )
        tasks = [
            asyncio.create_task(load(devices[0], kept)),  # keep-alive connections, reused
            asyncio.create_task(load(devices[1], kept)),
            asyncio.create_task(load(devices[2], churn)),  # a connection per call
        ]
        try:
            await eventually(lambda: ok >= 20, "the load to run")
            host.proc.send_signal(signal.SIGHUP)
            await eventually(lambda: "rolling restart done" in host.output() or host.proc.poll() is not None,
                             "the rolling restart", within_s=WAIT_S)
            new = {w["pid"] for w in await host.serving()}
            settled = ok
            await eventually(lambda: ok >= settled + 20, "calls after the restart")
            error = await stream.end()  # its worker retired: the stream ended, the client subscribes again
            assert (error.code, error.reason) == (grpc.StatusCode.UNAVAILABLE, "shutting_down")
            again = await GrpcWebClient(kept, url).stream(SUBSCRIBE, subscription(watcher))
            try:
                event = verify_event(gateway_pb2.GatewayEvent.FromString(await again.message()), key)
                assert event.event_type == "gateway.server_time"  # on a new worker
            finally:
                again.close()
        finally:
            stop.set()
            stream.close()
            await asyncio.gather(*tasks)
    assert not old & new, (old, new)
    assert not failed, f"{len(failed)} calls failed ({ok} succeeded, {len(retried)} retries): {failed[:5]}"
    print(f"{ok} calls, {len(retried)} connection errors retried: {sorted(set(retried))}")
