"""The SDK's calls wait for ready (docs/workers.md, "Wait for ready in the SDK and the CLI"): a
command and a stream started while nothing listens on the gateway's port yet succeed once a
gateway starts listening there; with ``wait_for_ready=False`` the same call fails UNAVAILABLE.

"The call was made before the gateway listened" is shown, not timed: the gateway starts only after
the client's channel has tried the port and failed (TRANSIENT_FAILURE). The device logs in through
another gateway on the same stub backend, which holds the session.
"""

from __future__ import annotations

import asyncio

import grpc
import pytest

from edgeward.client import EdgewardClient, GatewayError
from edgeward.config import Address
from edgeward.devtools.ports import free_port
from edgeward.stub import StubBackend
from tests.integration.conftest import GATEWAY_SIGNER, GatewayFactory, login
from tests.integration.streams import WAIT_S, eventually, push_connected


def _failed_to_connect(client: EdgewardClient) -> bool:
    channel = client._channel  # opened by the first call
    return channel is not None and channel.get_state() == grpc.ChannelConnectivity.TRANSIENT_FAILURE


async def test_a_command_and_a_stream_started_before_the_gateway_listens_succeed_once_it_does(
    start_gateway: GatewayFactory, stub: StubBackend
) -> None:
    device = await login(await start_gateway(), stub)
    port = free_port()
    async with EdgewardClient(
        f"127.0.0.1:{port}", GATEWAY_SIGNER.public_key, device.signer, device.device_session_id
    ) as client:
        # attempts=1: no resend of the SDK's own explains the success, only the wait for ready.
        command = asyncio.ensure_future(client.execute("user.echo", {"n": 1}, timeout=WAIT_S, attempts=1))
        events = client.subscribe(timeout=WAIT_S * 2)
        first_event = asyncio.ensure_future(anext(events))
        try:
            await eventually(lambda: _failed_to_connect(client), "the client's connection to be refused")
            assert not command.done() and not first_event.done()
            gateway = await start_gateway(grpc_addr=Address("127.0.0.1", port))
            assert gateway.grpc_port == port
            result = await asyncio.wait_for(command, WAIT_S)
            assert result.result_code == "ok" and result.json()["echo"] == {"n": 1} and not result.replayed
            opened = await asyncio.wait_for(first_event, WAIT_S)
            assert opened.event_type == "gateway.server_time"
            await push_connected(gateway)
        finally:
            for pending in (command, first_event):
                pending.cancel()
            await events.aclose()


async def test_without_wait_for_ready_a_call_to_a_gateway_not_listening_fails_unavailable(
    start_gateway: GatewayFactory, stub: StubBackend
) -> None:
    device = await login(await start_gateway(), stub)
    async with EdgewardClient(
        f"127.0.0.1:{free_port()}", GATEWAY_SIGNER.public_key, device.signer, device.device_session_id
    ) as client:
        # A deadline far away: the failure is UNAVAILABLE at once, not DEADLINE_EXCEEDED at the end.
        with pytest.raises(GatewayError) as refused:
            await client.execute("user.echo", timeout=WAIT_S, attempts=1, wait_for_ready=False)
        assert refused.value.code == grpc.StatusCode.UNAVAILABLE
        events = client.subscribe(timeout=WAIT_S, wait_for_ready=False)
        with pytest.raises(GatewayError) as ended:
            await asyncio.wait_for(anext(events), WAIT_S)
        await events.aclose()
        assert ended.value.code == grpc.StatusCode.UNAVAILABLE
