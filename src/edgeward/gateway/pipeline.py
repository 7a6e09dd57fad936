"""The request flow of docs/protocol.md §3, in the contract's order.

``RequestVerifier`` runs steps 1-7, shared by ExecuteCommand and SubscribeEvents (decode,
session, payload hash, signature, freshness, replay reservation, budgets); ``CommandExecutor``
adds step 8, route lookup and forwarding, and signs the answer; ``SubscriptionOpener`` adds the
other step 8, registration in the push hub, and signs the ``gateway.server_time`` event. Each step
raises ``Rejection`` with its stable reason, so the first failing step decides the answer.

With tracing on (gateway/tracing.py) each RPC gets a server span and its session lookup, replay
reservation, budgets and backend call get child spans; off, ``tracer`` is None and each of those
steps pays one ``is not None`` test.
"""

from __future__ import annotations

import asyncio
import dataclasses
import secrets
import time
from collections.abc import Callable, Mapping

import orjson
from prometheus_client import Histogram

from edgeward.clock import now_ms
from edgeward.gateway.backend import BackendClient, CommandContext, trace_id_for
from edgeward.gateway.event_history import EventHistory, events_before_live
from edgeward.gateway.replay import ReplayStore, fingerprint
from edgeward.gateway.routes import RouteTable
from edgeward.gateway.session_cache import SessionCache
from edgeward.gateway.tracing import RequestTracer
from edgeward.native.crypto import Signer, digest_equals, verify
from edgeward.native.envelope import SignedRequest, decode_request, encode_event, encode_response
from edgeward.native.session_record import SessionRecord
from edgeward.protection.budgets import CommandBudgets
from edgeward.protection.preauth_guard import PreAuthGuard
from edgeward.push.hub import PushHub, Subscriber
from edgeward.reasons import Reason, Rejection
from edgeward.runtime import shield_task

__all__ = (
    "REPLAYED_RESULT",
    "SERVER_TIME_EVENT_TYPE",
    "SUBSCRIBE_MESSAGE_TYPE",
    "CommandExecutor",
    "RequestVerifier",
    "SubscriptionOpener",
    "VerifiedRequest",
)

SUBSCRIBE_MESSAGE_TYPE = "gateway.subscribe"  # the only message_type SubscribeEvents takes (§1)
SERVER_TIME_EVENT_TYPE = "gateway.server_time"  # the first event of every stream (§4)
# The result code ``CommandExecutor.execute`` gives a kept response served again (docs/replay.md):
# never a real one, which is "ok" or a backend's non-empty error code.
REPLAYED_RESULT = ""


@dataclasses.dataclass(frozen=True, slots=True)
class VerifiedRequest:
    """A request that passed steps 1-7: authentic, fresh, first seen and within its budgets.

    Or, with ``kept`` set, a retry of the very same signed request that passed steps 1-5 and whose
    first call's signed response was kept (docs/replay.md, "Idempotent retry"): charged nothing,
    not to be forwarded, ``kept`` is its answer.
    """

    request: SignedRequest
    session: SessionRecord
    kept: bytes | None = None


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
        tracer: RequestTracer | None = None,
    ) -> None:
        """``replay_timer`` observes each reservation's latency (edgeward_replay_reservation_duration_seconds)."""
        self.tracer = tracer  # None: tracing off (gateway/tracing.py)
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

    def decode(self, data: bytes, kind: str) -> SignedRequest:
        """Step 1; apart from the rest so that a server span can take the request's trace id."""
        req = decode_request(data, self._max_payload_bytes, kind)
        if kind == "subscribe" and req.message_type != SUBSCRIBE_MESSAGE_TYPE:
            # A field limit of SubscribeEventsRequest (§1), so step 1: no session lookup, no
            # reservation, and INVALID_ARGUMENT rather than "not implemented" (docs/protocol.md §6.6).
            raise Rejection(
                Reason.INVALID_ENVELOPE,
                f"message_type: SubscribeEvents takes {SUBSCRIBE_MESSAGE_TYPE} only",
                metadata={"field": "message_type"},
            )
        return req

    async def verify(self, req: SignedRequest, client_ip: str, *, keep_answer: bool = False) -> VerifiedRequest:
        """Steps 2-7 of a decoded request.

        ``keep_answer`` (ExecuteCommand): the reservation is a ``claim``, so a retry of the very same
        request may get its first call's kept response (``VerifiedRequest.kept``); the caller then
        owes the store a ``finish`` for a request that passed, and a refusal by the budgets here
        finishes it at once.
        """
        tracer = self.tracer
        if tracer is None:
            session = await self._session(req, client_ip)
        else:
            with tracer.step("session_lookup"):
                session = await self._session(req, client_ip)
        await self._check_signature(req, client_ip, session)
        if tracer is None:
            charged = await self._reserve(req, client_ip, session, keep_answer)
        else:
            with tracer.step("replay_reservation"):
                charged = await self._reserve(req, client_ip, session, keep_answer)
        if isinstance(charged, bytes):  # a retry answered from the store: charged nothing
            return VerifiedRequest(req, session, charged)
        try:
            if tracer is None:
                await self._charge(req, client_ip, session, charged)
            else:
                with tracer.step("budgets"):
                    await self._charge(req, client_ip, session, charged)
        except BaseException:
            if keep_answer:  # refused after the claim: a retry is replayed_request, not in flight
                self.finish(req, None)
            raise
        return VerifiedRequest(req, session)

    def finish(self, req: SignedRequest, response: bytes | None) -> None:
        """Keep a claimed request's signed response (None: it ended without one) beside its reservation."""
        print_ = fingerprint(req.payload_hash, req.signature)
        self._replay.finish(req.device_session_id, req.request_id, print_, response)

    async def _session(self, req: SignedRequest, client_ip: str) -> SessionRecord:
        """Step 2, behind the pre-auth guard."""
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
        return session

    async def _check_signature(self, req: SignedRequest, client_ip: str, session: SessionRecord) -> None:
        """Steps 3-5: payload hash, signature, freshness."""
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

    async def _reserve(
        self, req: SignedRequest, client_ip: str, session: SessionRecord, keep_answer: bool
    ) -> Rejection | bool | bytes:
        """Step 6; with step 7's decision in the same Redis round trip when the store shares its
        server with the budgets (docs/replay.md). False: step 7 is still to do; else its outcome,
        True (admitted and charged) or the budget refusal for ``_charge`` to raise, so a replay
        still answers replayed_request first and is charged nothing. With ``keep_answer``, bytes:
        the kept response of a retry (charged nothing either); a retry without one raises
        request_in_flight or replayed_request from the store."""
        started = time.perf_counter()
        replay, ttl_ms = self._replay, self._replay_ttl_ms
        charged: Rejection | bool = False
        print_ = fingerprint(req.payload_hash, req.signature) if keep_answer else None
        try:
            both = replay.reserve_charging(
                req.device_session_id, req.request_id, ttl_ms, client_ip, session.user_id, req.message_type, print_
            )
            if both is None:
                if print_ is None:
                    first_seen: bool | bytes = await replay.reserve(req.device_session_id, req.request_id, ttl_ms)
                else:
                    kept = await replay.claim(req.device_session_id, req.request_id, ttl_ms, print_)
                    first_seen = True if kept is None else kept
            else:
                first_seen, refused = await both
                charged = True if refused is None else refused
        finally:
            self._replay_timer.observe(time.perf_counter() - started)
        if first_seen is True:
            return charged
        if first_seen is False:
            raise Rejection(Reason.REPLAYED_REQUEST)
        return first_seen

    async def _charge(
        self, req: SignedRequest, client_ip: str, session: SessionRecord, charged: Rejection | bool
    ) -> None:
        """Step 7, unless ``_reserve`` decided it (``charged``: True, or the refusal to raise)."""
        if charged is not False:
            if charged is True:
                return
            raise charged
        pending = self._budgets.charge(client_ip, req.device_session_id, session.user_id, req.message_type)
        if pending is not None:  # None when the in-process limiter decided at once
            await pending


class CommandExecutor:
    """ExecuteCommand: verify, route, forward, sign the backend's answer.

    Step 8 runs in a task of its own, shielded from the call: a client that leaves (its deadline, a
    lost connection) does not cancel a command the backend may already be running, so its answer
    is still kept for the client's retry (docs/replay.md, "Idempotent retry"). ``close`` cancels
    those left running at shutdown; they then keep "finished without an answer".
    """

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
        self._detached: set[asyncio.Task[tuple[bytes, str]]] = set()  # step 8 of calls that left

    async def close(self) -> None:
        """Cancel the commands whose calls left and wait for them (each keeps "finished" first)."""
        for task in self._detached:
            task.cancel()
        if self._detached:
            await asyncio.wait(list(self._detached))

    async def execute(self, data: bytes, client_ip: str) -> tuple[bytes, str]:
        """The signed ExecuteCommandResponse bytes and the backend's result code."""
        tracer = self._verifier.tracer
        if tracer is None:
            return await self._execute(self._verifier.decode(data, "execute"), client_ip, None)
        start_ns = time.time_ns()  # the server span starts before decoding, which yields its trace id
        req = self._verifier.decode(data, "execute")
        with tracer.request("ExecuteCommand", trace_id_for(req.trace_id, req.request_id), start_ns, _attributes(req)):
            return await self._execute(req, client_ip, tracer)

    async def _execute(self, req: SignedRequest, client_ip: str, tracer: RequestTracer | None) -> tuple[bytes, str]:
        """A kept response served again is (those bytes, ``REPLAYED_RESULT``); see docs/replay.md."""
        verifier = self._verifier
        verified = await verifier.verify(req, client_ip, keep_answer=True)
        if verified.kept is not None:
            return verified.kept, REPLAYED_RESULT
        work = asyncio.get_running_loop().create_task(self._forward_and_keep(req, verified, tracer))
        try:
            return await shield_task(work)
        except asyncio.CancelledError:
            if not work.done():  # the call left: the command goes on, and its answer is kept
                self._detached.add(work)
                work.add_done_callback(self._detached_done)
            raise

    def _detached_done(self, work: asyncio.Task[tuple[bytes, str]]) -> None:
        self._detached.discard(work)
        if not work.cancelled():
            work.exception()  # retrieved: nobody is left to answer with it

    async def _forward_and_keep(
        self, req: SignedRequest, verified: VerifiedRequest, tracer: RequestTracer | None
    ) -> tuple[bytes, str]:
        response: bytes | None = None
        try:
            response, result_code = await self._forward(req, verified, tracer)
        finally:  # whatever ended it, a retry must learn it: the answer, or "finished without one"
            self._verifier.finish(req, response)
        return response, result_code

    async def _forward(
        self, req: SignedRequest, verified: VerifiedRequest, tracer: RequestTracer | None
    ) -> tuple[bytes, str]:
        route = self._routes.get(req.message_type)  # step 8
        if route is None:
            raise Rejection(Reason.UNKNOWN_MESSAGE_TYPE, req.message_type)
        ctx = CommandContext(
            user_id=verified.session.user_id,
            device_session_id=req.device_session_id,
            request_id=req.request_id,
            message_type=req.message_type,
            trace_id=req.trace_id,
        )
        started = time.perf_counter()
        try:
            if tracer is None:
                answer = await self._backend.forward(route, req.payload, ctx)
            else:  # the backend call's span id becomes the traceparent's parent id
                with tracer.backend_call(req.message_type) as span_id:
                    answer = await self._backend.forward(route, req.payload, dataclasses.replace(ctx, span_id=span_id))
        finally:  # timeouts and failures are latencies too
            self._backend_timers[req.message_type].observe(time.perf_counter() - started)
        response = encode_response(
            self._signer, req.request_id, req.trace_id, answer.result_code, answer.body, self._clock()
        )
        return response, answer.result_code


def _attributes(req: SignedRequest) -> dict[str, str]:
    """A server span's attributes: identifiers only, never a payload, key or signature."""
    return {
        "edgeward.message_type": req.message_type,
        "edgeward.request_id": req.request_id,
        "edgeward.device_session_id": req.device_session_id,
    }


def _check_options(payload: bytes) -> str | None:
    """Subscription options: empty, or a JSON object; members this gateway does not know are ignored.

    Ignoring unknown options lets a newer client keep its stream on an older gateway. Returns
    ``resume_after`` (docs/push.md, "Resuming a stream"): null or absent is None; anything but a
    string of 1 to 256 characters is invalid_envelope (field payload_bytes), like a bad payload.
    """
    if not payload:
        return None
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
    resume_after = options.get("resume_after")
    if resume_after is None or (isinstance(resume_after, str) and 0 < len(resume_after) <= 256):
        return resume_after
    raise Rejection(
        Reason.INVALID_ENVELOPE,
        "payload_bytes: resume_after must be an event_id (a string of 1 to 256 characters)",
        metadata={"field": "payload_bytes"},
    )


class SubscriptionOpener:
    """SubscribeEvents up to its first event: verify, check the options, register, sign server_time."""

    def __init__(
        self, verifier: RequestVerifier, hub: PushHub, signer: Signer, clock: Callable[[], int] = now_ms,
        history: EventHistory | None = None,
    ) -> None:
        self._verifier = verifier
        self._hub = hub
        self._signer = signer
        self._clock = clock
        self._history = history  # None: no Redis, or EDGEWARD_EVENT_HISTORY off

    async def open(self, data: bytes, client_ip: str) -> tuple[Subscriber, bytes]:
        """The registered subscriber and the signed ``gateway.server_time`` event to write first.

        Registration comes before the event is signed and written, so every event published
        after the server time it carries reaches the stream, and a refusal (too_many_streams,
        shutting_down) is answered before any event.
        """
        tracer = self._verifier.tracer
        if tracer is None:
            return await self._open(self._verifier.decode(data, "subscribe"), client_ip)
        start_ns = time.time_ns()
        req = self._verifier.decode(data, "subscribe")
        with tracer.request("SubscribeEvents", trace_id_for(req.trace_id, req.request_id), start_ns, _attributes(req)):
            return await self._open(req, client_ip)

    async def _open(self, req: SignedRequest, client_ip: str) -> tuple[Subscriber, bytes]:
        verified = await self._verifier.verify(req, client_ip)
        resume_after = _check_options(req.payload)  # step 8
        user_id = verified.session.user_id
        subscriber = self._hub.register(user_id, req.device_session_id)
        try:
            event_id = secrets.token_hex(16)
            if resume_after is not None or self._history is not None:
                if resume_after is not None:
                    subscriber.hold()  # live events queued meanwhile may be in the history too
                replay, replayed = await events_before_live(
                    self._history, self._signer, user_id, req.device_session_id, resume_after, event_id, req.trace_id
                )
                subscriber.resume(replay, replayed)
            now = self._clock()
            body = orjson.dumps({"server_time_ms": now, "request_id": req.request_id})
            greeting = encode_event(self._signer, event_id, SERVER_TIME_EVENT_TYPE, body, now, req.trace_id)
        except BaseException:
            subscriber.close()
            raise
        return subscriber, greeting
