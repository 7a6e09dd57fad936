"""One SubscribeEvents stream per virtual user, read by a greenlet, and the delivery latency.

The user posts ``loadtest.ping`` events to its own device session through the backend (the stub's
test-event route) with the send time in the payload; this reader reports, for each one it
receives and verifies, the time from just before that post to its receipt as the Locust entry
``event delivery`` (request type ``stream``). Both ends run in this process, so one clock serves.
An event not received within ``LOST_AFTER_S`` is reported as a failure of that entry.

A stream the gateway ends (or that fails to open) is reported as a failed ``SubscribeEvents``
with its code and reason and opened again after a second, as a device would; a stream the user
cancels when it stops is not a failure.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import gevent
import gevent.event
import grpc

from edgeward._pb import gateway_pb2, gateway_pb2_grpc
from edgeward.client import SUBSCRIBE_MESSAGE_TYPE, Signer, build_signed_request, error_from_rpc, verify_event
from loadtest.measure import LoadTestError, report

__all__ = ("PING_EVENT_TYPE", "EventStream")

PING_EVENT_TYPE = "loadtest.ping"
LOST_AFTER_S = 5.0
_REOPEN_AFTER_S = 1.0
_READY_TIMEOUT_S = 10.0


class EventStream:
    """The stream of one device session; ``start()`` spawns the reader, ``stop()`` ends it."""

    def __init__(self, fire: Callable[..., Any], stub: gateway_pb2_grpc.EdgeGatewayStub, signer: Signer,
                 device_session_id: str, gateway_public_key: bytes) -> None:
        self._fire = fire
        self._stub = stub
        self._signer = signer
        self._device_session_id = device_session_id
        self._key = gateway_public_key
        self._ready = gevent.event.Event()  # set while a stream is open (its server_time was read)
        self._call: Any = None
        self._running = False
        self._reader: gevent.Greenlet | None = None
        self._pending: dict[int, float] = {}  # ping seq -> monotonic post time, until received
        self._seq = 0

    def start(self) -> bool:
        """Open the stream; True once its first event arrived (events posted later are delivered)."""
        self._running = True
        self._reader = gevent.spawn(self._read)
        return self._ready.wait(_READY_TIMEOUT_S)

    def stop(self) -> None:
        self._running = False
        if self._call is not None:
            self._call.cancel()
        if self._reader is not None:
            self._reader.join(timeout=5)
            self._reader.kill()

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    def next_ping(self) -> tuple[int, dict[str, int]]:
        """A new ping's sequence number and payload (the wall-clock send time in nanoseconds)."""
        self._seq += 1
        return self._seq, {"seq": self._seq, "sent_ns": time.time_ns()}

    def expect(self, seq: int) -> None:
        """Ping ``seq`` is about to be posted (set before: it may arrive before the post returns)."""
        self._pending[seq] = time.monotonic()

    def forget(self, seq: int) -> None:
        """The post of ping ``seq`` failed (reported as such): it is not expected any more."""
        self._pending.pop(seq, None)

    def report_lost(self) -> None:
        """Report every ping posted more than ``LOST_AFTER_S`` ago and still not received."""
        now = time.monotonic()
        for seq, posted_at in list(self._pending.items()):
            if now - posted_at > LOST_AFTER_S:
                del self._pending[seq]
                report(self._fire, "stream", "event delivery", (now - posted_at) * 1000.0,
                       LoadTestError(f"event not delivered within {LOST_AFTER_S:.0f} s"))

    def _read(self) -> None:
        while self._running:
            self._read_one_stream()
            self._ready.clear()
            if self._running:
                gevent.sleep(_REOPEN_AFTER_S)

    def _read_one_stream(self) -> None:
        request = build_signed_request(
            self._signer, self._device_session_id, SUBSCRIBE_MESSAGE_TYPE, b"",
            request_cls=gateway_pb2.SubscribeEventsRequest,
        )
        started = time.perf_counter()
        self._call = self._stub.SubscribeEvents(request)
        try:
            for message in self._call:
                event = verify_event(message, self._key)
                if not self._ready.is_set():  # the entry's time is the opening: up to server_time
                    report(self._fire, "grpc", "SubscribeEvents", (time.perf_counter() - started) * 1000.0)
                    self._ready.set()
                if event.event_type == PING_EVENT_TYPE:
                    self._received(event.json())
            raise LoadTestError("the gateway ended the stream with OK")
        except grpc.RpcError as err:
            if self._running:  # error_from_rpc reads a sync call's error as it reads an aio one
                self._failed(started, error_from_rpc(err))  # type: ignore[arg-type]
        except Exception as exc:
            self._call.cancel()
            self._failed(started, exc)

    def _failed(self, started: float, exc: Exception) -> None:
        """A stream that ends after opening is reported with no time, so the entry's times stay openings."""
        elapsed_ms = 0.0 if self._ready.is_set() else (time.perf_counter() - started) * 1000.0
        report(self._fire, "grpc", "SubscribeEvents", elapsed_ms, exc)

    def _received(self, payload: Any) -> None:
        received_ns = time.time_ns()
        if self._pending.pop(payload["seq"], None) is not None:  # else already reported lost
            report(self._fire, "stream", "event delivery", (received_ns - payload["sent_ns"]) / 1e6)
