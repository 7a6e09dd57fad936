"""Helpers for SubscribeEvents tests: a stream read with bounded waits, and the stub's admin actions.

Every wait is bounded (``WAIT_S``) and fails the test with a message rather than hanging; none is
a timing assertion.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import grpc

from edgeward._pb import gateway_pb2
from edgeward.client import Event, GatewayError, build_signed_request, error_from_rpc, verify_event
from edgeward.gateway.server import Gateway
from edgeward.native.crypto import Signer
from edgeward.stub import StubBackend
from tests.integration.conftest import GATEWAY_SIGNER, Device

SUBSCRIBE = "/edgeward.v1.EdgeGateway/SubscribeEvents"
WAIT_S = 30.0  # generous: only a failing test waits this long, and CI machines may be loaded


async def eventually(predicate: Callable[[], bool], what: str, within_s: float = WAIT_S) -> None:
    """Wait until ``predicate()`` holds, polling; fail naming ``what`` after ``within_s`` seconds."""
    deadline = time.monotonic() + within_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


class Stream:
    """One SubscribeEvents call of ``device``, read message by message with bounded waits."""

    def __init__(
        self,
        channel: grpc.aio.Channel,
        device: Device,
        payload: bytes = b"",
        *,
        message_type: str = "gateway.subscribe",
        gateway_key: bytes | None = None,
        **request_fields: Any,
    ) -> None:
        self.request = build_signed_request(
            device.signer, device.device_session_id, message_type, payload,
            request_cls=gateway_pb2.SubscribeEventsRequest, **request_fields,
        )
        self.gateway_key = GATEWAY_SIGNER.public_key if gateway_key is None else gateway_key
        self.call = channel.unary_stream(
            SUBSCRIBE,
            request_serializer=gateway_pb2.SubscribeEventsRequest.SerializeToString,
            response_deserializer=gateway_pb2.GatewayEvent.FromString,
        )(self.request, timeout=120)

    async def raw(self) -> gateway_pb2.GatewayEvent:
        message = await asyncio.wait_for(self.call.read(), WAIT_S)
        if message is grpc.aio.EOF:
            raise AssertionError("the stream ended with OK")
        assert isinstance(message, gateway_pb2.GatewayEvent)
        return message

    async def next(self) -> Event:
        """The next event, verified with the gateway's key."""
        return verify_event(await self.raw(), self.gateway_key)

    async def opened(self) -> Event:
        """The first event, which must be gateway.server_time for this subscription."""
        event = await self.next()
        assert event.event_type == "gateway.server_time"
        assert event.json()["request_id"] == self.request.envelope.request_id
        return event

    async def refused(self) -> GatewayError:
        """The gateway's error for a stream it refused before sending any event."""
        try:
            await self.raw()
        except grpc.aio.AioRpcError as err:
            return error_from_rpc(err)
        raise AssertionError("the stream was opened")

    async def end(self) -> GatewayError:
        """Read until the gateway ends the stream; its error (fails on a normal end)."""
        try:
            while True:
                await self.raw()
        except grpc.aio.AioRpcError as err:
            return error_from_rpc(err)

    def cancel(self) -> None:
        self.call.cancel()


def serve_env(stub: StubBackend, key_file: Path, ports: dict[str, int], **extra: str) -> dict[str, str]:
    """The environment of an ``edgeward serve`` process against ``stub`` on ``ports`` (grpc, public,
    admin), signing with ``key_file``: this process's environment without its ``EDGEWARD_*``, then ``extra``."""
    return {k: v for k, v in os.environ.items() if not k.startswith("EDGEWARD_")} | {
        "EDGEWARD_GRPC_ADDR": f"127.0.0.1:{ports['grpc']}",
        "EDGEWARD_PUBLIC_HTTP_ADDR": f"127.0.0.1:{ports['public']}",
        "EDGEWARD_ADMIN_HTTP_ADDR": f"127.0.0.1:{ports['admin']}",
        "EDGEWARD_BACKEND_BASE_URL": stub.base_url,
        "EDGEWARD_BACKEND_PUSH_ADDR": stub.push_addr,
        "EDGEWARD_SIGNING_KEY_FILE": str(key_file),
    } | extra


class Served:
    """A running ``edgeward serve``: its process, its log, its ports and its signing key."""

    def __init__(self, proc: subprocess.Popen[bytes], log: Path, ports: dict[str, int], signer: Signer) -> None:
        self.proc = proc
        self.log = log
        self.ports = ports
        self.signer = signer

    def output(self) -> str:
        return self.log.read_text(errors="replace")


async def spawn(
    args: list[str], env: dict[str, str], output: Path, errors: Path | None = None
) -> subprocess.Popen[bytes]:
    """Start a child process writing its stdout to ``output`` and its stderr to ``errors`` (or ``output``).

    ``subprocess.Popen`` is used, not the event loop's subprocess support: it forks with vfork,
    which runs neither gRPC's fork handlers nor Python's after-fork hooks. uvloop's spawn runs
    the hooks in the child, which can crash there while gRPC threads of this process are busy.
    """
    with output.open("wb") as out, (errors or output).open("ab") as err:
        return await asyncio.to_thread(subprocess.Popen, args, env=env, stdout=out, stderr=err)


async def user_id(gateway: Gateway, device: Device) -> str:
    record = await gateway.sessions.lookup(device.device_session_id)
    assert record is not None
    return record.user_id


async def _post(stub: StubBackend, path: str, body: dict[str, Any]) -> dict[str, Any]:
    async with aiohttp.ClientSession() as http, http.post(f"{stub.base_url}{path}", json=body) as resp:
        answer: dict[str, Any] = await resp.json()
        assert resp.status == 200, answer
        return answer


async def post_event(stub: StubBackend, user: str, payload: Any, device_session_id: str = "") -> str:
    """Push a client event through the stub; returns its event id."""
    body = {"user_id": user, "event_type": "test.event", "payload": payload, "device_session_id": device_session_id}
    answer = await _post(stub, "/api/v1/internal/stub/events", body)
    assert answer["gateways"] >= 1, "no gateway was connected to the stub's push"
    return str(answer["event_id"])


async def revoke(stub: StubBackend, device: Device) -> None:
    await _post(
        stub, f"/api/v1/internal/sessions/{device.device_session_id}/revoke", {"reason_code": "test", "actor": "pytest"}
    )


async def block_user(stub: StubBackend, user: str) -> None:
    await _post(stub, "/api/v1/internal/user-blocks", {"user_id": user, "reason_code": "test", "actor": "pytest"})


async def push_connected(gateway: Gateway) -> None:
    await eventually(lambda: gateway.dispatcher.connected, "the gateway's push stream")
