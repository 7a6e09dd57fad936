"""The stub backend's Push gRPC service over real gRPC on loopback: posted events and revocations.

A stream is registered before its headers are sent, so once ``initial_metadata()`` has arrived
every later publication is guaranteed to reach it, in order; no test needs to sleep.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import grpc
import orjson
import pytest

from edgeward._pb import push_pb2, push_pb2_grpc
from tests.test_stub_backend import (
    EVENTS,
    SESSIONS,
    USER_BLOCKS,
    WAIT_S,
    StubClient,
    assert_error,
    running_stub,
)

PushCall = grpc.aio.UnaryStreamCall[push_pb2.SubscribePushRequest, push_pb2.PushEvent]


@contextlib.asynccontextmanager
async def subscribed(stub: StubClient, gateway_id: str = "gw-test") -> AsyncIterator[PushCall]:
    """An open SubscribePush stream whose headers have arrived (so it gets every later event)."""
    async with grpc.aio.insecure_channel(stub.backend.push_addr) as channel:
        call = push_pb2_grpc.PushStub(channel).SubscribePush(
            push_pb2.SubscribePushRequest(gateway_id=gateway_id), timeout=60
        )
        try:
            await bounded(call.initial_metadata())
            yield call
        finally:
            call.cancel()


async def bounded(awaitable: Any) -> Any:
    return await asyncio.wait_for(awaitable, WAIT_S)


async def next_event(call: PushCall) -> push_pb2.PushEvent:
    event = await bounded(call.read())
    assert event is not grpc.aio.EOF, "the push stream ended"
    assert isinstance(event, push_pb2.PushEvent)
    return event


async def next_client_event(call: PushCall) -> push_pb2.ClientEvent:
    event = await next_event(call)
    assert event.WhichOneof("event") == "client_event", event
    return event.client_event


async def next_invalidation(call: PushCall) -> push_pb2.SessionInvalidation:
    event = await next_event(call)
    assert event.WhichOneof("event") == "session_invalidation", event
    return event.session_invalidation


@pytest.fixture
async def stub() -> AsyncIterator[StubClient]:
    async with running_stub() as client:
        yield client


async def test_a_posted_event_reaches_the_stream_as_a_client_event(stub: StubClient) -> None:
    login = await stub.login()
    payload = {"text": "hi", "n": [1, 2.5, None, True]}
    async with subscribed(stub) as call:
        assert stub.backend.push_streams == 1
        answer = await stub.ok(
            "POST",
            EVENTS,
            {
                "user_id": login.user_id,
                "device_session_id": login.device_session_id,
                "event_type": "chat.message",
                "payload": payload,
                "trace_id": "trace-1",
            },
        )
        assert answer["gateways"] == 1
        event = await next_client_event(call)
    assert event.event_id == answer["event_id"]
    assert event.event_type == "chat.message"
    assert event.user_id == login.user_id
    assert event.device_session_id == login.device_session_id
    assert orjson.loads(event.payload_bytes) == payload
    assert event.timestamp_ms > 0
    assert event.trace_id == "trace-1"


@pytest.mark.parametrize(
    "payload",
    [42, -1.5, "text", None, True, [], [1, "two"], {}, {"nested": {"deep": [None]}}],
)
@pytest.mark.parametrize("session_field", [{}, {"device_session_id": ""}, {"device_session_id": None}])
async def test_an_event_without_a_device_session_is_for_every_session_of_the_user(
    stub: StubClient, payload: Any, session_field: dict[str, Any]
) -> None:
    async with subscribed(stub) as call:
        body = {"user_id": "usr_1", "event_type": "news", "payload": payload, **session_field}
        answer = await stub.ok("POST", EVENTS, body)
        event = await next_client_event(call)
    assert event.event_id == answer["event_id"]
    assert (event.user_id, event.device_session_id, event.trace_id) == ("usr_1", "", "")
    assert event.payload_bytes == orjson.dumps(payload)


async def test_every_stream_gets_every_event_in_order(stub: StubClient) -> None:
    async with subscribed(stub, "gw-1") as one, subscribed(stub, "gw-2") as two:
        assert stub.backend.push_streams == 2
        ids = []
        for n in range(3):
            answer = await stub.ok("POST", EVENTS, {"user_id": "usr_1", "event_type": "tick", "payload": n})
            assert answer["gateways"] == 2
            ids.append(answer["event_id"])
        for call in (one, two):
            events = [await next_client_event(call) for _ in ids]
            assert [e.event_id for e in events] == ids
            assert [orjson.loads(e.payload_bytes) for e in events] == [0, 1, 2]


async def test_an_event_with_no_stream_open_reaches_no_gateway(stub: StubClient) -> None:
    answer = await stub.ok("POST", EVENTS, {"user_id": "usr_1", "event_type": "news", "payload": 1})
    assert answer["gateways"] == 0
    assert answer["event_id"]


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"{not json", id="not-json"),
        pytest.param(b"", id="empty"),
        pytest.param(b'[{"user_id": "usr_1", "event_type": "x"}]', id="array"),
        pytest.param(b'{"event_type": "x", "payload": 1}', id="no-user-id"),
        pytest.param(b'{"user_id": "usr_1", "payload": 1}', id="no-event-type"),
        pytest.param(b'{"user_id": "", "event_type": "x"}', id="empty-user-id"),
        pytest.param(b'{"user_id": 7, "event_type": "x"}', id="user-id-number"),
        pytest.param(b'{"user_id": "usr_1", "event_type": ["x"]}', id="event-type-array"),
        pytest.param(b'{"user_id": "usr_1", "event_type": "x", "device_session_id": 5}', id="dsid-number"),
        pytest.param(b'{"user_id": "usr_1", "event_type": "x", "device_session_id": "a b"}', id="dsid-space"),
        pytest.param(b'{"user_id": "usr_1", "event_type": "x", "trace_id": "a/b"}', id="trace-id-chars"),
        pytest.param(b'{"user_id": "usr_1", "event_type": "x", "trace_id": 3}', id="trace-id-number"),
        pytest.param(b'{"user_id": "usr_1", "event_type": "x", "payloads": {"a": 1}}', id="no-payload"),
    ],
)
async def test_invalid_event_bodies_are_400_and_not_pushed(stub: StubClient, data: bytes) -> None:
    async with subscribed(stub) as call:
        status, body = await stub.call("POST", EVENTS, data=data)
        assert_error(status, body, 400, "invalid_request")
        # Events are pushed in order: the next one on the stream is the valid one posted after.
        marker = await stub.ok("POST", EVENTS, {"user_id": "usr_1", "event_type": "marker", "payload": None})
        assert (await next_client_event(call)).event_id == marker["event_id"]


async def test_a_revocation_is_pushed_as_a_session_invalidation(stub: StubClient) -> None:
    login = await stub.login()
    async with subscribed(stub) as call:
        revoked = await stub.revoke(
            login.device_session_id, {"reason_code": "admin_revoke", "actor": {"type": "system"}}
        )
        invalidation = await next_invalidation(call)
        assert invalidation.device_session_id == login.device_session_id
        assert invalidation.user_id == login.user_id
        assert invalidation.revoked_at_ms == revoked["revoked_at_ms"]
        assert invalidation.reason_code == "admin_revoke"

        await stub.revoke(login.device_session_id)  # again, without a reason: pushed again
        again = await next_invalidation(call)
        assert (again.device_session_id, again.revoked_at_ms) == (login.device_session_id, revoked["revoked_at_ms"])
        assert again.reason_code == "session_revoked"


@pytest.mark.parametrize("by", ["email", "user_id"])
async def test_a_user_block_is_pushed_as_a_user_wide_invalidation(stub: StubClient, by: str) -> None:
    first = await stub.login("ada@example.com")
    second = await stub.login("ada@example.com")
    who = {"email": "ada@example.com"} if by == "email" else {"user_id": first.user_id}
    async with subscribed(stub) as call:
        actor = {"type": "admin", "id": "admin-1"}
        await stub.ok("POST", USER_BLOCKS, {**who, "reason_code": "abuse", "actor": actor})
        invalidation = await next_invalidation(call)
    session = await stub.session(second.device_session_id)
    assert invalidation.device_session_id == ""
    assert invalidation.user_id == first.user_id
    assert invalidation.reason_code == "abuse"
    assert invalidation.revoked_at_ms == session["revoked_at_ms"]


async def test_refused_revocations_push_nothing(stub: StubClient) -> None:
    async with subscribed(stub) as call:
        status, body = await stub.call("POST", f"{SESSIONS}/dsn_unknown/revoke", {})
        assert_error(status, body, 404, "session_not_found")
        status, body = await stub.call(
            "POST", USER_BLOCKS, {"user_id": "usr_unknown", "reason_code": "abuse", "actor": "ops"}
        )
        assert_error(status, body, 404, "user_not_found")
        marker = await stub.ok("POST", EVENTS, {"user_id": "usr_1", "event_type": "marker", "payload": None})
        assert (await next_client_event(call)).event_id == marker["event_id"]


async def test_events_and_invalidations_share_one_ordered_stream(stub: StubClient) -> None:
    login = await stub.login()
    async with subscribed(stub) as call:
        before = await stub.ok("POST", EVENTS, {"user_id": login.user_id, "event_type": "a", "payload": 1})
        await stub.revoke(login.device_session_id)
        after = await stub.ok("POST", EVENTS, {"user_id": login.user_id, "event_type": "b", "payload": 2})
        assert (await next_client_event(call)).event_id == before["event_id"]
        assert (await next_invalidation(call)).device_session_id == login.device_session_id
        assert (await next_client_event(call)).event_id == after["event_id"]


async def test_stopping_push_ends_streams_and_it_restarts_on_the_same_port(stub: StubClient) -> None:
    port = stub.backend.grpc_port
    async with subscribed(stub) as call:
        await stub.backend.stop_push()
        assert stub.backend.push_streams == 0
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await next_event(call)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE

    await stub.backend.start_push()
    assert stub.backend.grpc_port == port
    async with subscribed(stub) as call:
        answer = await stub.ok("POST", EVENTS, {"user_id": "usr_1", "event_type": "x", "payload": 1})
        assert (await next_client_event(call)).event_id == answer["event_id"]


async def test_a_stream_that_falls_behind_is_ended_as_a_slow_consumer() -> None:
    async with running_stub(stub_push_queue_size=1) as stub, subscribed(stub) as call:
        # Two publications with no await between: the second finds the stream's queue full.
        event = push_pb2.PushEvent(client_event=push_pb2.ClientEvent(event_id="e1", event_type="x", user_id="u"))
        assert stub.backend.hub.publish(event) == 1
        assert stub.backend.hub.publish(event) == 0
        assert stub.backend.push_streams == 0
        assert (await next_client_event(call)).event_id == "e1"
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await next_event(call)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert err.value.details() == "slow_consumer"


async def test_stopping_the_stub_ends_open_streams() -> None:
    async with running_stub() as stub, subscribed(stub) as call:
        await stub.backend.stop()
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await next_event(call)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
