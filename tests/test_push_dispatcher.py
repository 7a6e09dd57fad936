"""The push dispatcher without a network: its backoff, and how it applies what the backend pushes."""

from __future__ import annotations

import asyncio

import pytest

from edgeward._pb import push_pb2
from edgeward.gateway.session_cache import SessionCache
from edgeward.native.crypto import Signer
from edgeward.native.session_record import SessionRecord
from edgeward.push.dispatcher import Backoff, PushDispatcher
from edgeward.push.hub import PushHub
from edgeward.reasons import Reason

KEY = b"k" * 32


def test_backoff_doubles_up_to_its_cap() -> None:
    nominal = Backoff(100, 1_000, random=lambda: 1.0)
    assert [nominal.delay_ms(n) for n in range(6)] == [100, 200, 400, 800, 1_000, 1_000]
    assert nominal.delay_ms(10_000) == 1_000  # no overflow however long the backend stays down


def test_backoff_jitter_spans_the_upper_half_of_the_nominal_delay() -> None:
    assert Backoff(100, 1_000, random=lambda: 0.0).delay_ms(3) == 400
    assert Backoff(100, 1_000, random=lambda: 0.5).delay_ms(3) == 600
    real = Backoff(100, 1_000)
    assert all(500 <= real.delay_ms(9) <= 1_000 for _ in range(1_000))


def test_a_cap_below_the_first_delay_is_the_first_delay() -> None:
    assert Backoff(500, 10, random=lambda: 1.0).delay_ms(4) == 500


@pytest.fixture
def parts() -> tuple[PushDispatcher, PushHub, SessionCache]:
    records = {
        "a1": SessionRecord("a1", "ada", KEY, False),
        "a2": SessionRecord("a2", "ada", KEY, False),
        "b1": SessionRecord("b1", "bob", KEY, False),
    }

    async def source(dsid: str) -> SessionRecord | None:
        return records.get(dsid)

    sessions = SessionCache(source, max_entries=100, ttl_ms=60_000, negative_ttl_ms=1_000)
    hub = PushHub(Signer(bytes(range(32))), queue_size=8, max_per_session=4, max_per_user=8)
    dispatcher = PushDispatcher(
        "127.0.0.1:1", hub, sessions, Backoff(10, 100), keepalive_ms=300_000, keepalive_timeout_ms=10_000
    )
    return dispatcher, hub, sessions


def _invalidation(**fields: object) -> push_pb2.PushEvent:
    return push_pb2.PushEvent(session_invalidation=push_pb2.SessionInvalidation(**fields))  # type: ignore[arg-type]


async def test_a_session_invalidation_revokes_the_cached_record_then_ends_its_streams(
    parts: tuple[PushDispatcher, PushHub, SessionCache],
) -> None:
    dispatcher, hub, sessions = parts
    for dsid in ("a1", "a2"):
        await sessions.lookup(dsid)
    a1, a2 = hub.register("ada", "a1"), hub.register("ada", "a2")
    dispatcher._apply(_invalidation(device_session_id="a1", user_id="ada", revoked_at_ms=5))
    assert a1.ended is Reason.SESSION_REVOKED and a2.ended is None
    record = await sessions.lookup("a1")
    assert record is not None and record.revoked and record.revoked_at_ms == 5
    assert dispatcher.invalidations == 1


async def test_a_user_invalidation_revokes_every_session_of_the_user(
    parts: tuple[PushDispatcher, PushHub, SessionCache],
) -> None:
    dispatcher, hub, sessions = parts
    for dsid in ("a1", "a2", "b1"):
        await sessions.lookup(dsid)
    streams = [hub.register("ada", "a1"), hub.register("ada", "a2"), hub.register("bob", "b1")]
    dispatcher._apply(_invalidation(user_id="ada", revoked_at_ms=7))
    assert [s.ended for s in streams] == [Reason.SESSION_REVOKED, Reason.SESSION_REVOKED, None]
    assert [(await sessions.lookup(d)).revoked for d in ("a1", "a2", "b1")] == [True, True, False]  # type: ignore[union-attr]


async def test_client_events_are_published_and_addressless_ones_dropped(
    parts: tuple[PushDispatcher, PushHub, SessionCache],
) -> None:
    dispatcher, hub, _sessions = parts
    sub = hub.register("ada", "a1")
    event = push_pb2.ClientEvent(event_id="e1", event_type="t", user_id="ada", payload_bytes=b"{}")
    dispatcher._apply(push_pb2.PushEvent(client_event=event))
    dispatcher._apply(push_pb2.PushEvent(client_event=push_pb2.ClientEvent(event_id="e2", event_type="t")))
    assert sub.queued == 1 and hub.stats.events_published == 1 and dispatcher.events_received == 2


async def test_an_unreachable_backend_is_retried_until_closed(
    parts: tuple[PushDispatcher, PushHub, SessionCache],
) -> None:
    dispatcher, _hub, _sessions = parts
    dispatcher.start()
    for _ in range(500):
        if "UNAVAILABLE" in dispatcher.last_error:
            break
        await asyncio.sleep(0.01)
    assert "UNAVAILABLE" in dispatcher.last_error and not dispatcher.connected
    await dispatcher.close()
    assert dispatcher.connects == 0
