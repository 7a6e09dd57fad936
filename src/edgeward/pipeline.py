"""The request flow of docs/protocol.md §3, in the contract's order.

``RequestVerifier`` runs steps 1-7, shared by ExecuteCommand and SubscribeEvents (decode,
session, payload hash, signature, freshness, replay reservation, budgets); ``CommandExecutor``
adds step 8, route lookup and forwarding, and signs the answer. Each step raises ``Rejection``
with its stable reason, so the first failing step decides the answer.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from edgeward.backend import BackendClient, CommandContext
from edgeward.budgets import CommandBudgets
from edgeward.clock import now_ms
from edgeward.crypto import Signer, digest_equals, verify
from edgeward.envelope import SignedRequest, decode_request, encode_response
from edgeward.reasons import Reason, Rejection
from edgeward.replay import ReplayStore
from edgeward.routes import RouteTable
from edgeward.session_cache import SessionCache
from edgeward.session_record import SessionRecord

__all__ = ("CommandExecutor", "RequestVerifier", "VerifiedRequest")


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
        clock: Callable[[], int] = now_ms,
    ) -> None:
        self._sessions = sessions
        self._replay = replay
        self._budgets = budgets
        self._max_payload_bytes = max_payload_bytes
        self._freshness_window_ms = freshness_window_ms
        # Reservations outlive the freshness window on both sides of the gateway clock.
        self._replay_ttl_ms = 2 * freshness_window_ms
        self._clock = clock

    async def verify(self, data: bytes, client_ip: str, kind: str = "execute") -> VerifiedRequest:
        req = decode_request(data, self._max_payload_bytes, kind)  # step 1
        session = await self._sessions.lookup(req.device_session_id)  # step 2
        if session is None:
            raise Rejection(Reason.SESSION_NOT_FOUND)
        if session.revoked:
            raise Rejection(Reason.SESSION_REVOKED)
        if not digest_equals(req.payload_digest, req.payload_hash):  # step 3
            raise Rejection(Reason.PAYLOAD_HASH_MISMATCH)
        if not verify(session.client_public_key, req.signing_input, req.signature):  # step 4
            raise Rejection(Reason.INVALID_SIGNATURE)
        now = self._clock()  # step 5
        if abs(now - req.timestamp_ms) > self._freshness_window_ms:
            raise Rejection(
                Reason.STALE_REQUEST,
                f"timestamp_ms is {req.timestamp_ms - now} ms from the gateway clock",
                metadata={"server_time_ms": str(now)},
            )
        if not await self._replay.reserve(req.device_session_id, req.request_id, self._replay_ttl_ms):
            raise Rejection(Reason.REPLAYED_REQUEST)  # step 6
        self._budgets.charge(client_ip, req.device_session_id, session.user_id, req.message_type)  # step 7
        return VerifiedRequest(req, session)


class CommandExecutor:
    """ExecuteCommand: verify, route, forward, sign the backend's answer."""

    def __init__(
        self,
        verifier: RequestVerifier,
        routes: RouteTable,
        backend: BackendClient,
        signer: Signer,
        clock: Callable[[], int] = now_ms,
    ) -> None:
        self._verifier = verifier
        self._routes = routes
        self._backend = backend
        self._signer = signer
        self._clock = clock

    async def execute(self, data: bytes, client_ip: str) -> tuple[bytes, str]:
        """The signed ExecuteCommandResponse bytes and the backend's result code."""
        verified = await self._verifier.verify(data, client_ip)
        req = verified.request
        route = self._routes.get(req.message_type)  # step 8
        if route is None:
            raise Rejection(Reason.UNKNOWN_MESSAGE_TYPE, req.message_type)
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
        response = encode_response(
            self._signer, req.request_id, req.trace_id, answer.result_code, answer.body, self._clock()
        )
        return response, answer.result_code
