"""Resumable SubscribeEvents streams (docs/push.md, "Resuming a stream") over real sockets: a
gateway, the stub backend's push stream and a real redis-server.

"Nothing else arrived" is shown by ordering, as in test_subscribe.py: a marker event posted last
arriving next proves that nothing (no duplicate) was delivered in between.
"""

from __future__ import annotations

import grpc
import orjson

from edgeward.client import EdgewardClient
from edgeward.gateway.server import Gateway
from edgeward.io.resp import RespConnection
from edgeward.stub import StubBackend
from tests.integration.conftest import GATEWAY_SIGNER, Device, GatewayFactory, login
from tests.integration.streams import Stream, eventually, post_event, push_connected, user_id
from tests.support.redis_server import RedisServer


def resume(event_id: str) -> bytes:
    return orjson.dumps({"resume_after": event_id})


async def recorded(gateway: Gateway, count: int) -> None:
    """Wait until ``count`` events have been appended to the history without failure."""
    history = gateway.history
    assert history is not None
    await eventually(lambda: history.appended >= count, f"{count} history appends")
    await history._redis.drain()


async def open_gateway(start_gateway: GatewayFactory, stub: StubBackend, **overrides: object) -> tuple[Gateway, Device]:
    gateway = await start_gateway(**overrides)
    await push_connected(gateway)
    return gateway, await login(gateway, stub)


async def test_a_resumed_stream_gets_exactly_the_missed_events_in_order_then_live_ones(
    start_gateway: GatewayFactory, stub: StubBackend, redis_server: RedisServer
) -> None:
    gateway, device = await open_gateway(start_gateway, stub, redis_url=redis_server.url)
    user = await user_id(gateway, device)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.grpc_port}") as channel:
        first = Stream(channel, device)
        await first.opened()
        seen = [await post_event(stub, user, {"n": n}) for n in range(2)]
        assert [(await first.next()).event_id for _ in seen] == seen
        first.cancel()

        missed = [await post_event(stub, user, {"n": n}) for n in range(2, 6)]
        await recorded(gateway, 6)
        again = Stream(channel, device, resume(seen[-1]))
        await again.opened()
        replayed = [await again.next() for _ in missed]
        assert [e.event_id for e in replayed] == missed
        assert [e.json()["n"] for e in replayed] == [2, 3, 4, 5]
        marker = await post_event(stub, user, "live")
        assert (await again.next()).event_id == marker  # nothing in between: no duplicate
        again.cancel()

        # Resuming from the server_time of a stream that saw no client event gets what followed it.
        quiet = Stream(channel, device)
        start = await quiet.opened()
        quiet.cancel()
        later = await post_event(stub, user, "after server_time")
        await recorded(gateway, 8)
        third = Stream(channel, device, resume(start.event_id))
        await third.opened()
        assert (await third.next()).event_id == later
        marker = await post_event(stub, user, "live again")
        assert (await third.next()).event_id == marker
        third.cancel()


async def test_events_for_another_session_are_not_replayed(
    start_gateway: GatewayFactory, stub: StubBackend, redis_server: RedisServer
) -> None:
    gateway, device = await open_gateway(start_gateway, stub, redis_url=redis_server.url)
    other = await login(gateway, stub)  # same e-mail: the same user, another session
    user = await user_id(gateway, device)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.grpc_port}") as channel:
        stream = Stream(channel, device)
        start = await stream.opened()
        stream.cancel()
        await post_event(stub, user, "for the other", device_session_id=other.device_session_id)
        mine = await post_event(stub, user, "for me", device_session_id=device.device_session_id)
        await recorded(gateway, 2)
        again = Stream(channel, device, resume(start.event_id))
        await again.opened()
        assert (await again.next()).event_id == mine
        again.cancel()


async def test_a_trimmed_or_unknown_position_gets_resume_gap_first_then_live_events(
    start_gateway: GatewayFactory, stub: StubBackend, redis_server: RedisServer
) -> None:
    admin = RespConnection(redis_server.url)
    try:
        # Small stream nodes, so that MAXLEN ~ trims at small counts.
        assert await admin.execute("CONFIG", "SET", "stream-node-max-entries", "2") == b"OK"
    finally:
        await admin.close()
    gateway, device = await open_gateway(
        start_gateway, stub, redis_url=redis_server.url, event_history_max_len=2
    )
    user = await user_id(gateway, device)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.grpc_port}") as channel:
        first = Stream(channel, device)
        await first.opened()
        oldest = await post_event(stub, user, 0)
        assert (await first.next()).event_id == oldest
        first.cancel()
        for n in range(1, 10):
            await post_event(stub, user, n)
        await recorded(gateway, 10)
        posted = 10
        for position in (oldest, "never-delivered"):
            stream = Stream(channel, device, resume(position))
            await stream.opened()
            gap = await stream.next()
            assert gap.event_type == "gateway.resume_gap"
            assert gap.json() == {"resume_after": position, "reason": "not_in_history"}
            marker = await post_event(stub, user, "live")
            assert (await stream.next()).event_id == marker
            stream.cancel()
            # The gap event is a position too: resuming from it misses nothing after it.
            after_gap = await post_event(stub, user, "after the gap")
            posted += 2
            await recorded(gateway, posted)
            again = Stream(channel, device, resume(gap.event_id))
            await again.opened()
            assert [(await again.next()).event_id for _ in range(2)] == [marker, after_gap]
            again.cancel()


async def test_without_redis_a_resume_gets_resume_gap_and_a_bad_position_is_refused(
    channel: grpc.aio.Channel, gateway: Gateway, stub: StubBackend, device: Device
) -> None:
    await push_connected(gateway)
    user = await user_id(gateway, device)
    stream = Stream(channel, device, resume("abc"))
    await stream.opened()
    gap = await stream.next()
    assert gap.event_type == "gateway.resume_gap"
    assert gap.json() == {"resume_after": "abc", "reason": "no_history"}
    marker = await post_event(stub, user, "live")
    assert (await stream.next()).event_id == marker
    stream.cancel()
    for bad in (b'{"resume_after": 7}', b'{"resume_after": ""}', orjson.dumps({"resume_after": "x" * 257})):
        error = await Stream(channel, device, bad).refused()
        assert error.reason == "invalid_envelope" and error.metadata["field"] == "payload_bytes"
    plain = Stream(channel, device, b'{"resume_after": null}')  # null: no position, a fresh stream
    await plain.opened()
    marker = await post_event(stub, user, "live")
    assert (await plain.next()).event_id == marker
    plain.cancel()


async def test_a_redis_failure_during_resume_degrades_to_resume_gap_then_live(
    start_gateway: GatewayFactory, stub: StubBackend, redis_server: RedisServer
) -> None:
    gateway, device = await open_gateway(start_gateway, stub, redis_url=redis_server.url)
    user = await user_id(gateway, device)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.grpc_port}") as channel:
        stream = Stream(channel, device)
        start = await stream.opened()
        stream.cancel()
        history = gateway.history
        assert history is not None
        # The history's Redis fails (nothing listens on port 1); replay and budgets keep theirs.
        working, history._redis = history._redis, RespConnection("redis://127.0.0.1:1/0", socket_timeout_ms=200)
        try:
            again = Stream(channel, device, resume(start.event_id))
            await again.opened()
            gap = await again.next()
            assert gap.event_type == "gateway.resume_gap"
            assert gap.json()["reason"] == "history_unavailable"
            marker = await post_event(stub, user, "live")  # its append fails: delivered live all the same
            assert (await again.next()).event_id == marker
            again.cancel()
            await eventually(lambda: history.append_failures >= 1, "the failed append to be counted")
        finally:
            await history._redis.close()
            history._redis = working


async def test_the_sdk_resumes_from_the_last_event_id(
    start_gateway: GatewayFactory, stub: StubBackend, redis_server: RedisServer
) -> None:
    gateway, device = await open_gateway(start_gateway, stub, redis_url=redis_server.url)
    user = await user_id(gateway, device)
    target = f"127.0.0.1:{gateway.grpc_port}"
    async with EdgewardClient(target, GATEWAY_SIGNER.public_key, device.signer, device.device_session_id) as client:
        events = client.subscribe()
        last = (await anext(events)).event_id  # server_time
        await events.aclose()
        missed = [await post_event(stub, user, n) for n in range(3)]
        await recorded(gateway, 3)
        resumed = client.subscribe(resume_after=last)
        assert (await anext(resumed)).event_type == "gateway.server_time"
        assert [(await anext(resumed)).event_id for _ in missed] == missed
        await resumed.aclose()
