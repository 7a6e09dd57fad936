"""The request flow of docs/protocol.md §3, in the contract's order.

``RequestVerifier`` runs steps 1-7, shared by ExecuteCommand and SubscribeEvents (decode,
session, payload hash, signature, freshness, replay reservation, budgets); ``CommandExecutor``
adds step 8, route lookup and forwarding, and signs the answer; ``SubscriptionOpener`` adds the
other step 8, registration in the push hub, and signs the ``gateway.server_time`` event. Each step
raises ``Rejection`` with its stable reason, so the first failing step decides the answer.
"""

from __future__ import annotations

import dataclasses
import secrets
import time
from collections.abc import Callable, Mapping

import orjson
from prometheus_client import Histogram

from edgeward.clock import now_ms
from edgeward.gateway.backend import BackendClient, CommandContext
from edgeward.gateway.replay import ReplayStore
from edgeward.gateway.routes import RouteTable
from edgeward.gateway.session_cache import SessionCache
from edgeward.native.crypto import Signer, digest_equals, verify
from edgeward.native.envelope import SignedRequest, decode_request, encode_event, encode_response
from edgeward.native.session_record import SessionRecord
from edgeward.protection.budgets import CommandBudgets
from edgeward.protection.preauth_guard import PreAuthGuard
from edgeward.push.hub import PushHub, Subscriber
from edgeward.reasons import Reason, Rejection

__all__ = (
    "SERVER_TIME_EVENT_TYPE",
    "SUBSCRIBE_MESSAGE_TYPE",
    "CommandExecutor",
    "RequestVerifier",
    "SubscriptionOpener",
    "VerifiedRequest",
)

SUBSCRIBE_MESSAGE_TYPE = "gateway.subscribe"  # the only message_type SubscribeEvents takes (§1)
SERVER_TIME_EVENT_TYPE = "gateway.server_time"  # the first event of every stream (§4)


@dataclasses.dataclass(frozen=True, slots=True)
class VerifiedRequest:
    """A request that passed steps 1-7: authentic, fresh, first seen and within its budgets."""

    request: SignedRequest
    session: SessionRecord


class RequestVerifier:
    def __init__(
        self,
        sessions: SessionCache,
        replay: ReplayStore,
        budgets: CommandBudgets,
        *,
        max_payload_bytes: int,
        freshness_window_ms: int,
        replay_timer: Histogram,
        clock: Callable[[], int] = now_ms,
        guard: PreAuthGuard | None = None,
    ) -> None:
        """``replay_timer`` observes each reservation's latency (edgeward_replay_reservation_duration_seconds)."""
        self._sessions = sessions
        self._replay = replay
        self._budgets = budgets
        self._guard = guard or PreAuthGuard()  # the default counts nothing and blocks nobody
        self.signature_verifications = 0  # Ed25519 checks (step 4), for metrics and tests
        self._max_payload_bytes = max_payload_bytes
        self._freshness_window_ms = freshness_window_ms
        # Reservations outlive the freshness window on both sides of the gateway clock.
        self._replay_ttl_ms = 2 * freshness_window_ms
        self._replay_timer = replay_timer
        self._clock = clock

    async def verify(self, data: bytes, client_ip: str, kind: str = "execute") -> VerifiedRequest:
        req = decode_request(data, self._max_payload_bytes, kind)  # step 1
        if kind == "subscribe" and req.message_type != SUBSCRIBE_MESSAGE_TYPE:
            # A field limit of SubscribeEventsRequest (§1), so step 1: no session lookup, no
            # reservation, and INVALID_ARGUMENT rather than "not implemented" (docs/protocol.md §6.6).
            raise Rejection(
                Reason.INVALID_ENVELOPE,
                f"message_type: SubscribeEvents takes {SUBSCRIBE_MESSAGE_TYPE} only",
                metadata={"field": "message_type"},
            )
        # An IP over its authentication failure budget stops here, before any signature work
        # (docs/edge-protection.md §5); its failures below are what the guard counts.
        pending = self._guard.check(client_ip)
        if pending is not None:
            await pending
        session = self._sessions.cached(req.device_session_id)  # step 2: from memory, not charged
        if session is None:  # may call the backend: charged to the IP's budget before it starts
            session = await self._guard.lookup(client_ip, req.device_session_id, self._sessions.lookup)
        if session.revoked:
            raise Rejection(Reason.SESSION_REVOKED)
        self._guard.before_signature_check(client_ip)  # what other requests of the IP met meanwhile
        if not digest_equals(req.payload_digest, req.payload_hash):  # step 3
            raise await self._guard.failed(client_ip, Reason.PAYLOAD_HASH_MISMATCH)
        self.signature_verifications += 1
        if not verify(session.client_public_key, req.signing_input, req.signature):  # step 4
            raise await self._guard.failed(client_ip, Reason.INVALID_SIGNATURE)
        now = self._clock()  # step 5
        if abs(now - req.timestamp_ms) > self._freshness_window_ms:
            raise Rejection(
                Reason.STALE_REQUEST,
                f"timestamp_ms is {req.timestamp_ms - now} ms from the gateway clock",
                metadata={"server_time_ms": str(now)},
            )
        started = time.perf_counter()
        try:
            first_seen = await self._replay.reserve(req.device_session_id, req.request_id, self._replay_ttl_ms)
        finally:
            self._replay_timer.observe(time.perf_counter() - started)
        if not first_seen:
            raise Rejection(Reason.REPLAYED_REQUEST)  # step 6
        pending = self._budgets.charge(client_ip, req.device_session_id, session.user_id, req.message_type)
        if pending is not None:  # step 7; None when the in-process limiter decided at once
            await pending
        return VerifiedRequest(req, session)


class CommandExecutor:
    """ExecuteCommand: verify, route, forward, sign the backend's answer."""

    def __init__(
        self,
        verifier: RequestVerifier,
        routes: RouteTable,
        backend: BackendClient,
        signer: Signer,
        backend_timers: Mapping[str, Histogram],
        clock: Callable[[], int] = now_ms,
    ) -> None:
        """``backend_timers``: per message type of ``routes``, its backend latency histogram's child."""
        self._verifier = verifier
        self._routes = routes
        self._backend = backend
        self._backend_timers = backend_timers
        self._signer = signer
        self._clock = clock

    async def execute(self, data: bytes, client_ip: str) -> tuple[bytes, str]:
        """The signed ExecuteCommandResponse bytes and the backend's result code."""
        verified = await self._verifier.verify(data, client_ip)
        req = verified.request
        route = self._routes.get(req.message_type)  # step 8
        if route is None:
            raise Rejection(Reason.UNKNOWN_MESSAGE_TYPE, req.message_type)
        started = time.perf_counter()
        try:
            answer = await self._backend.forward(
                route,
                req.payload,
                CommandContext(
                    user_id=verified.session.user_id,
                    device_session_id=req.device_session_id,
                    request_id=req.request_id,
                    message_type=req.message_type,
                    trace_id=req.trace_id,
                ),
            )
        finally:  # timeouts and failures are latencies too
            self._backend_timers[req.message_type].observe(time.perf_counter() - started)
        response = encode_response(
            self._signer, req.request_id, req.trace_id, answer.result_code, answer.body, self._clock()
        )
        return response, answer.result_code


def _check_options(payload: bytes) -> None:
    """Subscription options: empty, or a JSON object; members this gateway does not know are ignored.

    Ignoring unknown options lets a newer client keep its stream on an older gateway.
    """
    if not payload:
        return
    try:
        options = orjson.loads(payload)
    except orjson.JSONDecodeError:
        options = None
    if not isinstance(options, dict):
        raise Rejection(
            Reason.INVALID_ENVELOPE,
            "payload_bytes: subscription options must be empty or a JSON object",
            metadata={"field": "payload_bytes"},
        )


class SubscriptionOpener:
    """SubscribeEvents up to its first event: verify, check the options, register, sign server_time."""

    def __init__(
        self, verifier: RequestVerifier, hub: PushHub, signer: Signer, clock: Callable[[], int] = now_ms
    ) -> None:
        self._verifier = verifier
        self._hub = hub
        self._signer = signer
        self._clock = clock

    async def open(self, data: bytes, client_ip: str) -> tuple[Subscriber, bytes]:
        """The registered subscriber and the signed ``gateway.server_time`` event to write first.

        Registration comes before the event is signed and written, so every event published
        after the server time it carries reaches the stream, and a refusal (too_many_streams,
        shutting_down) is answered before any event.
        """
        verified = await self._verifier.verify(data, client_ip, "subscribe")
        req = verified.request
        _check_options(req.payload)  # step 8
        subscriber = self._hub.register(verified.session.user_id, req.device_session_id)
        try:
            now = self._clock()
            body = orjson.dumps({"server_time_ms": now, "request_id": req.request_id})
            event_id = secrets.token_hex(16)
            greeting = encode_event(self._signer, event_id, SERVER_TIME_EVENT_TYPE, body, now, req.trace_id)
        except BaseException:
            subscriber.close()
            raise
        return subscriber, greeting
