"""SubscribeEvents end to end: a gateway, a stub backend and its push stream over real sockets.

Events posted to the stub travel stub -> Push.SubscribePush -> dispatcher -> hub -> streams;
revocations and user blocks travel the same way. "Nothing else arrived" is shown by ordering, not
by waiting: a stream's events arrive in order, so a later marker event arriving next proves that
nothing was delivered in between.
"""

from __future__ import annotations

import grpc

from edgeward.clock import now_ms
from edgeward.gateway.server import Gateway
from edgeward.native.crypto import Signer
from edgeward.stub import StubBackend
from tests.integration.conftest import Device, GatewayFactory, login, rejected
from tests.integration.streams import (
    Stream,
    block_user,
    eventually,
    post_event,
    push_connected,
    revoke,
    user_id,
)

FAST_RECONNECT = {"push_reconnect_initial_ms": 20, "push_reconnect_max_ms": 200}


async def test_the_first_event_is_the_signed_server_time(channel: grpc.aio.Channel, device: Device) -> None:
    stream = Stream(channel, device, trace_id="trace-9")
    event = await stream.opened()  # verified with the gateway's key
    assert abs(event.json()["server_time_ms"] - now_ms()) < 60_000
    assert event.json()["server_time_ms"] == event.timestamp_ms and event.trace_id == "trace-9"
    stream.cancel()


async def test_events_reach_exactly_the_addressed_streams(
    gateway: Gateway, stub: StubBackend, channel: grpc.aio.Channel
) -> None:
    a1, a2 = await login(gateway, stub, "ada@example.com"), await login(gateway, stub, "ada@example.com")
    b1 = await login(gateway, stub, "bob@example.com")
    s_a1, s_a2, s_b1 = Stream(channel, a1), Stream(channel, a2), Stream(channel, b1)
    for stream in (s_a1, s_a2, s_b1):
        await stream.opened()
    await push_connected(gateway)
    ada, bob = await user_id(gateway, a1), await user_id(gateway, b1)
    assert await user_id(gateway, a2) == ada

    everyone = await post_event(stub, ada, {"n": 1})
    await post_event(stub, ada, {"n": 2}, device_session_id=a2.device_session_id)
    await post_event(stub, bob, {"n": 3})
    await post_event(stub, ada, {"n": 4})
    await post_event(stub, bob, {"n": 5})

    first_a1, first_a2 = await s_a1.raw(), await s_a2.raw()
    assert first_a1.SerializeToString() == first_a2.SerializeToString()  # signed once, same bytes
    assert first_a1.envelope.event_id == everyone
    assert [(await s_a1.next()).json()["n"]] == [4]  # not 2: that one was for a2 only
    assert [(await s_a2.next()).json()["n"] for _ in range(2)] == [2, 4]
    assert [(await s_b1.next()).json()["n"] for _ in range(2)] == [3, 5]  # none of ada's
    for stream in (s_a1, s_a2, s_b1):
        stream.cancel()


async def test_subscriptions_go_through_the_verification_pipeline(
    gateway: Gateway, channel: grpc.aio.Channel, device: Device
) -> None:
    err = await Stream(channel, device, message_type="user.echo").refused()
    assert (err.code, err.reason, err.metadata) == (
        grpc.StatusCode.INVALID_ARGUMENT, "invalid_envelope", {"field": "message_type"}
    )
    for options in (b"[1, 2]", b"not json"):
        err = await Stream(channel, device, options).refused()
        assert (err.reason, err.metadata) == ("invalid_envelope", {"field": "payload_bytes"})
    ghost = Device(Signer.generate(), "dsn_no_such_session", "ghost@example.com")
    assert (await Stream(channel, ghost).refused()).reason == "session_not_found"
    forger = Device(Signer.generate(), device.device_session_id, device.email)
    assert (await Stream(channel, forger).refused()).reason == "invalid_signature"

    first = Stream(channel, device, b'{"an_option_from_the_future": true}', request_id="subscription-0001")
    await first.opened()  # unknown options are ignored
    err = await Stream(channel, device, request_id="subscription-0001").refused()
    assert (err.code, err.reason) == (grpc.StatusCode.ALREADY_EXISTS, "replayed_request")

    gateway.begin_drain()
    err = await Stream(channel, device).refused()
    assert (err.code, err.reason) == (grpc.StatusCode.UNAVAILABLE, "shutting_down")
    first.cancel()


async def test_streams_are_capped_per_device_session_and_per_user(
    start_gateway: GatewayFactory, stub: StubBackend
) -> None:
    gateway = await start_gateway(max_streams_per_session=1, max_streams_per_user=2)
    a1, a2, a3 = [await login(gateway, stub, "ada@example.com") for _ in range(3)]
    async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.grpc_port}") as channel:
        s_a1 = Stream(channel, a1)
        await s_a1.opened()
        err = await Stream(channel, a1).refused()
        assert (err.code, err.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "too_many_streams")
        assert err.metadata == {"scope": "device_session", "max_streams": "1"}
        s_a2 = Stream(channel, a2)  # held: grpcio cancels a call its caller no longer references
        await s_a2.opened()
        err = await Stream(channel, a3).refused()
        assert err.metadata == {"scope": "user", "max_streams": "2"}
        s_a1.cancel()  # a stream the client leaves frees its place
        await eventually(lambda: len(gateway.hub) == 1, "the cancelled stream to be unregistered")
        await Stream(channel, a3).opened()


async def test_revoking_a_session_ends_only_its_streams_and_stops_its_commands_at_the_edge(
    gateway: Gateway, stub: StubBackend, channel: grpc.aio.Channel
) -> None:
    a1, a2 = await login(gateway, stub, "ada@example.com"), await login(gateway, stub, "ada@example.com")
    revoked_streams = [Stream(channel, a1), Stream(channel, a1)]
    kept = Stream(channel, a2)
    for stream in (*revoked_streams, kept):
        await stream.opened()
    await push_connected(gateway)

    await revoke(stub, a1)
    for stream in revoked_streams:
        err = await stream.end()
        assert (err.code, err.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "session_revoked")
    await post_event(stub, await user_id(gateway, a2), {"still": "here"})
    assert (await kept.next()).json() == {"still": "here"}

    before = stub.calls.copy()
    err = await rejected(channel, a1.request("user.echo"))
    assert (err.code, err.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "session_revoked")
    assert stub.calls == before  # refused from the cache the invalidation updated
    kept.cancel()


async def test_a_user_block_ends_every_stream_of_the_user_and_their_commands_stop_at_the_edge(
    gateway: Gateway, stub: StubBackend, channel: grpc.aio.Channel
) -> None:
    ada_devices = [await login(gateway, stub, "ada@example.com") for _ in range(2)]
    bob = await login(gateway, stub, "bob@example.com")
    ada_streams = [Stream(channel, d) for d in ada_devices]
    bob_stream = Stream(channel, bob)
    for stream in (*ada_streams, bob_stream):
        await stream.opened()
    await push_connected(gateway)

    await block_user(stub, await user_id(gateway, ada_devices[0]))
    for stream in ada_streams:
        assert (await stream.end()).reason == "session_revoked"
    await post_event(stub, await user_id(gateway, bob), {"for": "bob"})
    assert (await bob_stream.next()).json() == {"for": "bob"}

    before = stub.calls.copy()
    for device in ada_devices:
        assert (await rejected(channel, device.request("user.echo"))).reason == "session_revoked"
    assert stub.calls == before
    bob_stream.cancel()


async def test_a_stalled_subscriber_is_ended_as_slow_consumer_and_nobody_else_waits(
    start_gateway: GatewayFactory, stub: StubBackend
) -> None:
    gateway = await start_gateway(stream_queue_size=2)
    stalled_device, reader_device = [await login(gateway, stub, "ada@example.com") for _ in range(2)]
    target = f"127.0.0.1:{gateway.grpc_port}"
    # The stalled client gets its own connection with a small, fixed flow-control window, so the
    # gateway's writes to it block after a few events and its queue fills.
    stalled_options = [("grpc.http2.bdp_probe", 0), ("grpc.use_local_subchannel_pool", 1)]
    async with (
        grpc.aio.insecure_channel(target, options=stalled_options) as stalled_channel,
        grpc.aio.insecure_channel(target) as reader_channel,
    ):
        stalled = Stream(stalled_channel, stalled_device)
        await stalled.opened()  # then it stops reading
        reader = Stream(reader_channel, reader_device)
        await reader.opened()
        await push_connected(gateway)
        ada = await user_id(gateway, reader_device)
        padding = "x" * 32_000
        for n in range(300):
            await post_event(stub, ada, {"n": n, "padding": padding})
            assert (await reader.next()).json()["n"] == n
            if gateway.hub.stats.streams_ended["slow_consumer"]:
                break
        else:
            raise AssertionError("the stalled stream was never ended")
        await post_event(stub, ada, {"n": "after"})
        assert (await reader.next()).json()["n"] == "after"
        err = await stalled.end()  # what was already sent, then the status
        assert (err.code, err.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "slow_consumer")
        reader.cancel()


async def test_the_dispatcher_reconnects_when_the_push_server_comes_back(
    start_gateway: GatewayFactory, stub: StubBackend
) -> None:
    gateway = await start_gateway(**FAST_RECONNECT)
    device = await login(gateway, stub)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.grpc_port}") as channel:
        stream = Stream(channel, device)
        await stream.opened()
        await push_connected(gateway)
        await stub.stop_push()
        await eventually(lambda: not gateway.dispatcher.connected, "the push stream to be lost")
        await stub.start_push()
        await push_connected(gateway)
        assert gateway.dispatcher.reconnects >= 1
        await post_event(stub, await user_id(gateway, device), {"after": "reconnect"})
        assert (await stream.next()).json() == {"after": "reconnect"}  # the stream outlived the outage
        stream.cancel()


async def test_a_revocation_missed_while_push_was_down_ends_the_stream_once_it_is_back(
    start_gateway: GatewayFactory, stub: StubBackend
) -> None:
    gateway = await start_gateway(**FAST_RECONNECT)
    revoked, kept = await login(gateway, stub, "ada@example.com"), await login(gateway, stub, "bob@example.com")
    async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.grpc_port}") as channel:
        s_revoked, s_kept = Stream(channel, revoked), Stream(channel, kept)
        for stream in (s_revoked, s_kept):
            await stream.opened()
        await push_connected(gateway)
        await stub.stop_push()
        await eventually(lambda: not gateway.dispatcher.connected, "the push stream to be lost")
        assert stub.push_streams == 0
        await revoke(stub, revoked)  # pushed to no gateway: the stub has none connected
        await stub.start_push()
        assert (await s_revoked.end()).reason == "session_revoked"  # the resync read it again
        await post_event(stub, await user_id(gateway, kept), {"n": 1})
        assert (await s_kept.next()).json() == {"n": 1}
        assert (await rejected(channel, revoked.request("user.echo"))).reason == "session_revoked"
        s_kept.cancel()


async def test_stopping_the_gateway_ends_open_streams_with_shutting_down(
    start_gateway: GatewayFactory, stub: StubBackend
) -> None:
    gateway = await start_gateway()
    devices = [await login(gateway, stub, f"user{i}@example.com") for i in range(3)]
    async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.grpc_port}") as channel:
        streams = [Stream(channel, d) for d in devices]
        for stream in streams:
            await stream.opened()
        await gateway.stop(grace=5)
        for stream in streams:
            err = await stream.end()
            assert (err.code, err.reason) == (grpc.StatusCode.UNAVAILABLE, "shutting_down")
    assert gateway.hub.stats.streams_ended == {"shutting_down": 3}
