"""PushHub while a stream resumes (docs/push.md, "Resuming a stream"): live events queued while the
history is read are kept, except those the replay carries; the replay goes out first."""

from __future__ import annotations

from edgeward._pb import gateway_pb2
from edgeward.reasons import Reason
from tests.test_pushhub import GREETING, Reader, make_hub, publish


async def test_the_replay_goes_first_and_live_events_it_carries_are_dropped() -> None:
    hub = make_hub(queue_size=2)
    sub = hub.register("u1", "d1")
    sub.hold()
    assert publish(hub, "u1", n=0) == publish(hub, "u1", n=1) == 1  # queued while the history is read
    sub.resume([b"missed", b"ev-1 from history"], {"ev-1"})
    assert sub.queued == 1  # ev-0 stays queued; ev-1 is in the replay
    assert publish(hub, "u1", n=2) == 1  # the replay does not count against the queue
    reader = Reader(sub)
    await reader.settle()
    assert reader.written[:3] == [GREETING, b"missed", b"ev-1 from history"]
    live = [gateway_pb2.GatewayEvent.FromString(data).envelope.event_id for data in reader.written[3:]]
    assert live == ["ev-0", "ev-2"]
    assert sub.ended is None
    await reader.stop()


async def test_an_ended_stream_drops_its_replay() -> None:
    hub = make_hub()
    sub = hub.register("u1", "d1")
    sub.hold()
    sub.resume([b"missed"], set())
    hub.end_user("u1", Reason.SESSION_REVOKED)
    reader = Reader(sub)
    assert await reader.ended() is Reason.SESSION_REVOKED
    assert reader.written == []
