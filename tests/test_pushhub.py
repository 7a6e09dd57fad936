"""PushHub: fan-out (signed once, addressed by user or device session), caps, slow consumers, ending, close."""

from __future__ import annotations

import asyncio

import pytest

from edgeward._pb import gateway_pb2
from edgeward.client import verify_event
from edgeward.native.crypto import Signer
from edgeward.push.hub import PushHub, Subscriber
from edgeward.reasons import Reason, Rejection

SIGNER = Signer(bytes(range(32)))
GREETING = b"greeting"


def make_hub(queue_size: int = 8, per_session: int = 4, per_user: int = 8) -> PushHub:
    return PushHub(SIGNER, queue_size=queue_size, max_per_session=per_session, max_per_user=per_user)


class Reader:
    """Pumps one subscriber into a list, as the gRPC handler does; ``write`` can be made to block."""

    def __init__(self, sub: Subscriber) -> None:
        self.sub = sub
        self.written: list[bytes] = []
        self.blocked: asyncio.Event | None = None  # while set to an unset Event, every write blocks
        self.task = asyncio.ensure_future(sub.pump(self._write, GREETING))

    async def _write(self, data: bytes) -> None:
        if self.blocked is not None:
            await self.blocked.wait()
        self.written.append(data)

    async def stop(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        self.sub.close()

    async def settle(self) -> None:
        for _ in range(20):
            await asyncio.sleep(0)

    async def ended(self) -> Reason:
        with pytest.raises(Rejection) as info:
            await asyncio.wait_for(self.task, 5)
        return info.value.reason

    def events(self) -> list[gateway_pb2.GatewayEvent]:
        return [gateway_pb2.GatewayEvent.FromString(d) for d in self.written if d != GREETING]


def publish(hub: PushHub, user: str, dsid: str = "", n: int = 0) -> int:
    return hub.publish(user, dsid, f"ev-{n}", "test.event", b'{"n":%d}' % n, 1_700_000_000_000 + n, "trace-1")


async def test_user_events_reach_every_stream_of_the_user_signed_once() -> None:
    hub = make_hub()
    a1, a2, b1 = (Reader(hub.register(u, s)) for u, s in (("ada", "a1"), ("ada", "a2"), ("bob", "b1")))
    await a1.settle()
    assert publish(hub, "ada") == 2
    await a1.settle()
    assert a1.written[0] == GREETING
    assert a1.written[1] is a2.written[1]  # the same bytes object: encoded and signed once
    assert hub.stats.events_signed == 1 and hub.stats.events_queued == 2
    event = verify_event(a1.events()[0], SIGNER.public_key)
    assert (event.event_id, event.event_type, event.trace_id) == ("ev-0", "test.event", "trace-1")
    assert event.json() == {"n": 0}
    assert b1.events() == []
    for reader in (a1, a2, b1):
        await reader.stop()


async def test_device_events_reach_only_that_session_of_that_user() -> None:
    hub = make_hub()
    a1, a2 = Reader(hub.register("ada", "a1")), Reader(hub.register("ada", "a2"))
    assert publish(hub, "ada", "a2", 1) == 1
    assert publish(hub, "mallory", "a2", 2) == 0  # a session of another user: nobody, nothing signed
    assert publish(hub, "ada", "no-such-session", 3) == 0
    await a1.settle()
    assert [e.envelope.event_id for e in a2.events()] == ["ev-1"] and a1.events() == []
    assert hub.stats.events_published == 3 and hub.stats.events_signed == 1
    await a1.stop()
    await a2.stop()


async def test_caps_per_device_session_and_per_user() -> None:
    hub = make_hub(per_session=2, per_user=3)
    first = hub.register("ada", "a1")
    hub.register("ada", "a1")
    with pytest.raises(Rejection) as info:
        hub.register("ada", "a1")
    assert info.value.reason is Reason.TOO_MANY_STREAMS
    assert info.value.metadata == {"scope": "device_session", "max_streams": "2"}
    hub.register("ada", "a2")
    with pytest.raises(Rejection) as info:
        hub.register("ada", "a3")
    assert info.value.metadata == {"scope": "user", "max_streams": "3"}
    hub.register("bob", "b1")  # another user is not affected
    first.close()
    hub.register("ada", "a3")  # a closed stream frees its place
    assert len(hub) == 4 and hub.stats.streams_refused == 2
    assert hub.stats.streams_ended == {"cancelled": 1}


async def test_a_full_queue_ends_only_that_stream_with_slow_consumer() -> None:
    hub = make_hub(queue_size=2)
    stuck = hub.register("ada", "a1")  # never pumped: nothing leaves its queue
    fast = Reader(hub.register("ada", "a2"))
    for n in range(3):
        publish(hub, "ada", n=n)
        await fast.settle()
    assert stuck.ended is Reason.SLOW_CONSUMER and stuck.queued == 0
    assert [e.envelope.event_id for e in fast.events()] == ["ev-0", "ev-1", "ev-2"]
    assert publish(hub, "ada", n=3) == 1
    assert hub.stats.streams_ended == {"slow_consumer": 1} and len(hub) == 1
    await fast.stop()


async def test_a_blocked_write_does_not_keep_a_slow_stream_alive() -> None:
    hub = make_hub(queue_size=1)
    reader = Reader(hub.register("ada", "a1"))
    reader.blocked = asyncio.Event()  # the client stopped reading: the greeting's write never completes
    await reader.settle()
    publish(hub, "ada", n=0)  # queued
    publish(hub, "ada", n=1)  # the queue is full: the stream ends and its blocked write is interrupted
    assert await reader.ended() is Reason.SLOW_CONSUMER
    assert reader.written == []


async def test_ending_a_session_or_a_user_drops_what_was_queued() -> None:
    hub = make_hub()
    a1, a2, b1 = hub.register("ada", "a1"), hub.register("ada", "a2"), hub.register("bob", "b1")
    publish(hub, "ada", n=0)
    assert hub.end_session("a1", Reason.SESSION_REVOKED) == 1
    reader = Reader(a1)
    assert await reader.ended() is Reason.SESSION_REVOKED
    assert reader.written == []  # neither the greeting nor the event queued before the revocation
    assert a2.ended is None and b1.ended is None
    assert hub.end_user("ada", Reason.SESSION_REVOKED) == 1
    assert a2.ended is Reason.SESSION_REVOKED and b1.ended is None
    assert hub.session_ids() == ["b1"]


async def test_close_ends_every_stream_with_shutting_down_and_refuses_new_ones() -> None:
    hub = make_hub()
    readers = [Reader(hub.register("ada", "a1")), Reader(hub.register("bob", "b1"))]
    await readers[0].settle()
    assert hub.close() == 2
    assert [await r.ended() for r in readers] == [Reason.SHUTTING_DOWN] * 2
    with pytest.raises(Rejection) as info:
        hub.register("ada", "a1")
    assert info.value.reason is Reason.SHUTTING_DOWN
    assert len(hub) == 0 and hub.stats.streams_ended == {"shutting_down": 2}


async def test_a_cancelled_pump_unregisters_as_closed_by_the_client() -> None:
    hub = make_hub()
    reader = Reader(hub.register("ada", "a1"))
    await reader.settle()
    reader.task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reader.task
    reader.sub.close()
    reader.sub.close()  # twice is harmless
    assert len(hub) == 0 and hub.stats.streams_ended == {"cancelled": 1}
    assert publish(hub, "ada") == 0 and hub.stats.events_signed == 0
