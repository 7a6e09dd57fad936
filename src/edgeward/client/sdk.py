"""Client SDK: what a device uses to log in, send signed commands and receive signed events.

A device signs every request with its own Ed25519 key (docs/protocol.md §2) and trusts an answer
only after checking it: the payload hash (constant time), the gateway's signature over the
canonical signing input, and, for a command, that the response echoes the request id. A
rejection by the gateway arrives as a gRPC status whose details carry ``google.rpc.ErrorInfo``
(§3); it is raised as ``GatewayError`` with the stable reason code, so callers match on strings
the contract guarantees rather than on free-form messages.

Calls wait for ready (gRPC ``wait_for_ready``) unless told not to: a call made while the channel
cannot connect (the gateway not yet listening, a reconnect reset by a worker retiring in a
rolling restart: docs/workers.md) waits for the channel's next connection, bounded by the call's
deadline, instead of failing at once with UNAVAILABLE. The price: against a gateway that stays
down, a call fails only at its deadline (DEADLINE_EXCEEDED). ``wait_for_ready=False`` fails fast.
"""

from __future__ import annotations

import asyncio
import dataclasses
import secrets
from collections.abc import AsyncGenerator
from types import TracebackType
from typing import Any, TypeVar, cast, overload
from urllib.parse import quote

import aiohttp
import grpc
import orjson
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from edgeward._pb import gateway_pb2
from edgeward.clock import now_ms
from edgeward.native.crypto import Signer, digest_equals, sha256, verify
from edgeward.native.envelope import PROTOCOL_VERSION
from edgeward.native.signing import event_signing_input, request_signing_input, response_signing_input
from edgeward.reasons import Reason

__all__ = (
    "CHANNEL_OPTIONS",
    "REPLAYED_METADATA_KEY",
    "SUBSCRIBE_MESSAGE_TYPE",
    "AuthError",
    "CommandResult",
    "EdgewardClient",
    "Event",
    "GatewayError",
    "VerificationError",
    "build_signed_request",
    "confirm_email_code",
    "error_from_rpc",
    "error_from_status",
    "login_with_stub_mailbox",
    "new_request_id",
    "read_stub_mailbox",
    "send_email_code",
    "verify_event",
    "verify_response",
)

SUBSCRIBE_MESSAGE_TYPE = "gateway.subscribe"
# Channel options every client of the gateway should use: gRPC retries a call the server never
# started (UNAVAILABLE, or CANCELLED by a worker retiring in a rolling restart: docs/workers.md).
# A resent signed request is never run twice: a reserved request id is answered with the first
# call's kept response, or replayed_request (docs/replay.md, "Idempotent retry").
CHANNEL_OPTIONS: tuple[tuple[str, str], ...] = (
    (
        "grpc.service_config",
        orjson.dumps(
            {
                "methodConfig": [
                    {
                        "name": [{"service": "edgeward.v1.EdgeGateway"}],
                        "retryPolicy": {
                            "maxAttempts": 3,
                            "initialBackoff": "0.01s",
                            "maxBackoff": "0.1s",
                            "backoffMultiplier": 2,
                            "retryableStatusCodes": ["UNAVAILABLE", "CANCELLED"],
                        },
                    }
                ]
            }
        ).decode(),
    ),
)
_EXECUTE = "/edgeward.v1.EdgeGateway/ExecuteCommand"
_SUBSCRIBE = "/edgeward.v1.EdgeGateway/SubscribeEvents"
_HTTP_TIMEOUT = aiohttp.ClientTimeout(total=10)
REPLAYED_METADATA_KEY = "edgeward-replayed"  # "1" in the trailers of a kept response served again
# Idempotent retry (docs/replay.md): what an ExecuteCommand may be resent for, as the very same
# signed request. Failures that did not come from the gateway's verdict (no connection, the
# client's deadline, a call cut): the command may or may not have run. And three verdicts that
# say "ask again": the first call still runs, the store could not answer, the gateway stopped.
_RETRY_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED})
_RETRY_REASONS = frozenset({"request_in_flight", "replay_store_unavailable", "shutting_down"})
_GATEWAY_REASONS = frozenset(reason.wire for reason in Reason)
_RETRY_BACKOFF_S = 0.1  # doubled each attempt, unless the gateway's RetryInfo says otherwise

_Request = TypeVar("_Request", gateway_pb2.ExecuteCommandRequest, gateway_pb2.SubscribeEventsRequest)


class GatewayError(Exception):
    """The gateway refused a call; ``reason`` is the stable code from docs/protocol.md §3.

    ``metadata`` is the ErrorInfo metadata (``server_time_ms`` on stale_request, ``field`` on
    invalid_envelope); ``retry_after_ms`` comes from RetryInfo (rate_limited). A failure that never
    reached the gateway (no connection, deadline) has no ErrorInfo: its reason is the gRPC details.
    """

    def __init__(
        self, code: grpc.StatusCode, reason: str, metadata: dict[str, str], retry_after_ms: int | None
    ) -> None:
        super().__init__(f"{code.name}: {reason}")
        self.code = code
        self.reason = reason
        self.metadata = metadata
        self.retry_after_ms = retry_after_ms


class VerificationError(Exception):
    """An answer that must not be trusted: bad payload hash, bad signature or wrong request id."""


class AuthError(Exception):
    """The public auth API (or the stub mailbox) answered with an error or an unexpected body."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"HTTP {status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message


@dataclasses.dataclass(frozen=True, slots=True)
class CommandResult:
    """A verified ExecuteCommandResponse: ``result_code`` is "ok" or the backend's error code.

    ``replayed``: the gateway answered a retry with the first call's kept response (the command ran
    once; ``timestamp_ms`` is the first answer's).
    """

    result_code: str
    payload: bytes
    request_id: str
    timestamp_ms: int
    trace_id: str
    replayed: bool = False

    def json(self) -> Any:
        """The payload parsed as JSON (the stock backend always answers JSON)."""
        return orjson.loads(self.payload)


@dataclasses.dataclass(frozen=True, slots=True)
class Event:
    """A verified GatewayEvent."""

    event_id: str
    event_type: str
    timestamp_ms: int
    payload: bytes
    trace_id: str

    def json(self) -> Any:
        return orjson.loads(self.payload)


def new_request_id() -> str:
    """32 random hex characters: unique per session without coordination (replay protection)."""
    return secrets.token_hex(16)


@overload
def build_signed_request(
    signer: Signer, device_session_id: str, message_type: str, payload: bytes, *,
    request_id: str | None = ..., timestamp_ms: int | None = ..., trace_id: str = ...,
) -> gateway_pb2.ExecuteCommandRequest: ...
@overload
def build_signed_request(
    signer: Signer, device_session_id: str, message_type: str, payload: bytes, *,
    request_id: str | None = ..., timestamp_ms: int | None = ..., trace_id: str = ...,
    request_cls: type[_Request],
) -> _Request: ...
def build_signed_request(
    signer: Signer, device_session_id: str, message_type: str, payload: bytes, *,
    request_id: str | None = None, timestamp_ms: int | None = None, trace_id: str = "",
    request_cls: type[Any] = gateway_pb2.ExecuteCommandRequest,
) -> Any:
    """An ExecuteCommandRequest (or ``request_cls``) signed over ``request_signing_input``.

    A fresh request id and the current clock are used unless given; tests pass them to build
    replays and stale requests on purpose.
    """
    rid = new_request_id() if request_id is None else request_id
    ts = now_ms() if timestamp_ms is None else timestamp_ms
    digest = sha256(payload)
    envelope = gateway_pb2.RequestEnvelope(
        protocol_version=PROTOCOL_VERSION, device_session_id=device_session_id, message_type=message_type,
        request_id=rid, timestamp_ms=ts, payload_hash=digest, trace_id=trace_id,
    )
    signing_input = request_signing_input(
        PROTOCOL_VERSION, device_session_id, message_type, rid, ts, digest, trace_id
    )
    return request_cls(envelope=envelope, payload_bytes=payload, signature=signer.sign(signing_input))


def _check_signed(
    payload: bytes, payload_hash: bytes, signing_input: bytes, signature: bytes, gateway_public_key: bytes
) -> None:
    if not digest_equals(sha256(payload), payload_hash):
        raise VerificationError("payload_hash does not match the payload")
    if not verify(gateway_public_key, signing_input, signature):
        raise VerificationError("the gateway signature does not verify")


def verify_response(
    resp: gateway_pb2.ExecuteCommandResponse, gateway_public_key: bytes, expected_request_id: str
) -> CommandResult:
    """The checked content of ``resp``, or VerificationError; nothing unverified is returned."""
    if not resp.HasField("envelope"):
        raise VerificationError("response has no envelope")
    env = resp.envelope
    if env.protocol_version != PROTOCOL_VERSION:
        raise VerificationError(f"unsupported response protocol_version {env.protocol_version}")
    signing_input = response_signing_input(
        env.protocol_version, env.request_id, env.timestamp_ms, env.result_code, env.payload_hash,
        env.trace_id,
    )
    _check_signed(resp.payload_bytes, env.payload_hash, signing_input, resp.signature, gateway_public_key)
    # Checked after the signature so a mismatch is known to come from the gateway itself.
    if env.request_id != expected_request_id:
        raise VerificationError(f"response is for request {env.request_id!r}, not {expected_request_id!r}")
    return CommandResult(env.result_code, resp.payload_bytes, env.request_id, env.timestamp_ms, env.trace_id)


def verify_event(ev: gateway_pb2.GatewayEvent, gateway_public_key: bytes) -> Event:
    """The checked content of ``ev``, or VerificationError."""
    if not ev.HasField("envelope"):
        raise VerificationError("event has no envelope")
    env = ev.envelope
    if env.protocol_version != PROTOCOL_VERSION:
        raise VerificationError(f"unsupported event protocol_version {env.protocol_version}")
    signing_input = event_signing_input(
        env.protocol_version, env.event_id, env.event_type, env.timestamp_ms, env.payload_hash, env.trace_id
    )
    _check_signed(ev.payload_bytes, env.payload_hash, signing_input, ev.signature, gateway_public_key)
    return Event(env.event_id, env.event_type, env.timestamp_ms, ev.payload_bytes, env.trace_id)


def _may_retry(error: GatewayError) -> bool:
    """Whether an ExecuteCommand failure leaves its outcome unknown, so resending it is the remedy."""
    if error.code not in _RETRY_CODES:
        return False
    return error.reason in _RETRY_REASONS or error.reason not in _GATEWAY_REASONS


def error_from_rpc(err: grpc.aio.AioRpcError) -> GatewayError:
    """Parse the ``grpc-status-details-bin`` trailer of a failed call into a GatewayError.

    Details that are missing, undecodable or inconsistent with the status fall back to the
    status details string, so a parse problem never hides the original failure.
    """
    code = err.code()
    try:  # AioRpcError has grpc.Call's synchronous accessors; the stubs do not say so.
        status = rpc_status.from_call(cast(grpc.Call, err))
    except (ValueError, DecodeError):
        status = None
    return error_from_status(code, err.details() or code.name.lower(), status)


def error_from_status(code: grpc.StatusCode, message: str, status: status_pb2.Status | None) -> GatewayError:
    """A GatewayError from a failed call's code, status message and decoded ``google.rpc.Status``
    (None when there was none): its ErrorInfo gives the reason and metadata, its RetryInfo the
    delay. For any transport: gRPC's trailers (``error_from_rpc``) or gRPC-Web's."""
    reason, metadata, retry_after_ms = message, {}, None
    for detail in status.details if status is not None else ():
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reason, metadata = info.reason, dict(info.metadata)
        elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            retry = error_details_pb2.RetryInfo()
            detail.Unpack(retry)
            retry_after_ms = int(retry.retry_delay.ToMilliseconds())
    return GatewayError(code, reason, metadata, retry_after_ms)


class EdgewardClient:
    """One device session talking to one gateway over a gRPC channel opened on first use.

    ``device_session_id`` may be set after construction (e.g. after logging in again).
    """

    def __init__(
        self,
        grpc_target: str,
        gateway_public_key: bytes,
        signer: Signer,
        device_session_id: str | None = None,
        *,
        credentials: grpc.ChannelCredentials | None = None,
    ) -> None:
        self.grpc_target = grpc_target
        self.gateway_public_key = gateway_public_key
        self.signer = signer
        self.device_session_id = device_session_id
        self._credentials = credentials
        self._channel: grpc.aio.Channel | None = None

    async def __aenter__(self) -> EdgewardClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._channel is not None:
            channel, self._channel = self._channel, None
            await channel.close(None)

    def _open(self) -> grpc.aio.Channel:
        # Opened lazily: a grpc.aio channel binds to the running event loop.
        if self._channel is None:
            if self._credentials is None:
                self._channel = grpc.aio.insecure_channel(self.grpc_target, options=CHANNEL_OPTIONS)
            else:
                self._channel = grpc.aio.secure_channel(self.grpc_target, self._credentials, options=CHANNEL_OPTIONS)
        return self._channel

    def _sign(self, message_type: str, payload: bytes, trace_id: str, request_id: str | None,
              request_cls: type[_Request]) -> _Request:
        if self.device_session_id is None:
            raise RuntimeError("no device session: log in first (e.g. login_with_stub_mailbox)")
        return build_signed_request(
            self.signer, self.device_session_id, message_type, payload,
            request_id=request_id, trace_id=trace_id, request_cls=request_cls,
        )

    async def execute(
        self, message_type: str, payload: bytes | Any = b"", *, trace_id: str = "",
        request_id: str | None = None,
        timeout: float = 10.0,  # noqa: ASYNC109  (a gRPC deadline: the gateway sees it too)
        attempts: int = 3,
        wait_for_ready: bool = True,
    ) -> CommandResult:
        """Send one signed command; a payload that is not bytes is sent as JSON.

        ``wait_for_ready`` (on by default): each call waits, within its ``timeout``, for a channel
        that cannot connect yet (module docstring); False fails at once with UNAVAILABLE when the
        gateway cannot be reached (then retried like any UNAVAILABLE, ``attempts`` calls in all).

        A call whose outcome is unknown (UNAVAILABLE, DEADLINE_EXCEEDED or CANCELLED that the
        gateway did not decide, or its request_in_flight, replay_store_unavailable, shutting_down) is
        sent again as the very same signed request, up to ``attempts`` calls in all: the gateway
        runs it at most once and answers a retry with the first call's response (``replayed``),
        verified like any other. A retry answered ``replayed_request`` means the first call ended
        without a kept answer: whether it ran is unknown (docs/replay.md, "Idempotent retry").

        Raises GatewayError when the gateway refuses it and VerificationError when the answer
        does not verify. A backend error is not an exception: it is a result_code.
        """
        if attempts < 1:
            raise ValueError("attempts must be at least 1")
        body = payload if isinstance(payload, bytes) else orjson.dumps(payload)
        request = self._sign(message_type, body, trace_id, request_id, gateway_pb2.ExecuteCommandRequest)
        send = self._open().unary_unary(
            _EXECUTE,
            request_serializer=gateway_pb2.ExecuteCommandRequest.SerializeToString,
            response_deserializer=gateway_pb2.ExecuteCommandResponse.FromString,
        )
        backoff = _RETRY_BACKOFF_S
        for attempt in range(1, attempts + 1):
            call = send(request, timeout=timeout, wait_for_ready=wait_for_ready)
            try:
                response: gateway_pb2.ExecuteCommandResponse = await call
            except grpc.aio.AioRpcError as err:
                error = error_from_rpc(err)
                if attempt == attempts or not _may_retry(error):
                    raise error from err
                await asyncio.sleep(backoff if error.retry_after_ms is None else error.retry_after_ms / 1000)
                backoff *= 2
                continue
            result = verify_response(response, self.gateway_public_key, request.envelope.request_id)
            trailers = await call.trailing_metadata()
            if trailers is not None and (REPLAYED_METADATA_KEY, "1") in tuple(trailers):
                return dataclasses.replace(result, replayed=True)
            return result
        raise AssertionError("unreachable")  # pragma: no cover

    async def subscribe(
        self, options: Any = None, *, trace_id: str = "", resume_after: str | None = None,
        timeout: float | None = None,  # noqa: ASYNC109  (a gRPC deadline on the whole stream)
        wait_for_ready: bool = True,
    ) -> AsyncGenerator[Event, None]:
        """Verified events of a SubscribeEvents stream (the first is ``gateway.server_time``).

        ``options`` is sent as the JSON payload (bytes as they are, None as empty). The stream
        ends with GatewayError (e.g. session_revoked, slow_consumer, shutting_down); leaving the
        loop early cancels the call.

        ``resume_after``: the ``event_id`` of the last event received on an earlier stream
        (``gateway.server_time`` included); the gateway first sends what was missed since, or a
        ``gateway.resume_gap`` event when it cannot (re-read your state then). docs/push.md,
        "Resuming a stream". It is added to ``options`` (a dict, or None).

        ``wait_for_ready`` (on by default): a stream opened while the gateway cannot be reached
        waits for it (module docstring), up to ``timeout``: without one, as long as it takes.
        False fails at once with UNAVAILABLE.
        """
        if resume_after is not None:
            options = {**(options or {}), "resume_after": resume_after}
        body = b"" if options is None else options if isinstance(options, bytes) else orjson.dumps(options)
        request = self._sign(SUBSCRIBE_MESSAGE_TYPE, body, trace_id, None, gateway_pb2.SubscribeEventsRequest)
        stream = self._open().unary_stream(
            _SUBSCRIBE,
            request_serializer=gateway_pb2.SubscribeEventsRequest.SerializeToString,
            response_deserializer=gateway_pb2.GatewayEvent.FromString,
        )
        call = stream(request, timeout=timeout, wait_for_ready=wait_for_ready)
        try:
            async for message in call:
                yield verify_event(message, self.gateway_public_key)
        except grpc.aio.AioRpcError as err:
            raise error_from_rpc(err) from err
        finally:
            call.cancel()


def _json_text(value: Any) -> str:
    return orjson.dumps(value).decode()


async def _http_json(method: str, url: str, body: Any = None) -> dict[str, Any]:
    """The JSON object an auth endpoint answers, or AuthError carrying its ``{"error"}`` body."""
    async with (
        aiohttp.ClientSession(timeout=_HTTP_TIMEOUT, json_serialize=_json_text) as session,
        session.request(method, url, json=body) as resp,
    ):
        raw = await resp.read()
    try:
        parsed = orjson.loads(raw)
    except orjson.JSONDecodeError:
        parsed = None
    if resp.status >= 400:
        error = parsed.get("error") if isinstance(parsed, dict) else None
        if isinstance(error, dict):
            raise AuthError(resp.status, str(error.get("code", "")), str(error.get("message", "")))
        raise AuthError(resp.status, f"http_{resp.status}", raw[:200].decode(errors="replace"))
    if not isinstance(parsed, dict):
        raise AuthError(resp.status, "malformed_response", f"{method} {url} did not answer a JSON object")
    return parsed


def _field(answer: dict[str, Any], name: str, url: str) -> str:
    value = answer.get(name)
    if not isinstance(value, str) or not value:
        raise AuthError(200, "malformed_response", f"{url} answered without a {name!r} string")
    return value


async def send_email_code(public_url: str, email: str) -> str:
    """Ask for a login code to be mailed; returns the challenge id to confirm it with."""
    url = f"{public_url.rstrip('/')}/api/v1/public/auth/send-email-code"
    return _field(await _http_json("POST", url, {"email": email}), "challenge_id", url)


async def confirm_email_code(public_url: str, challenge_id: str, code: str, public_key_b64: str) -> str:
    """Bind the device's public key to a new device session; returns its id."""
    url = f"{public_url.rstrip('/')}/api/v1/public/auth/confirm-email-code"
    body = {"challenge_id": challenge_id, "code": code, "client_public_key": public_key_b64}
    return _field(await _http_json("POST", url, body), "device_session_id", url)


async def read_stub_mailbox(backend_url: str, email: str) -> str:
    """Development only: the last code the stub backend "mailed" to ``email`` (``{"code"}``)."""
    url = f"{backend_url.rstrip('/')}/api/v1/internal/stub/mailbox/{quote(email, safe='@')}"
    return _field(await _http_json("GET", url), "code", url)


async def login_with_stub_mailbox(public_url: str, backend_url: str, email: str, signer: Signer) -> str:
    """The whole e-mail login against a dev stack, reading the code from the stub's mailbox."""
    challenge_id = await send_email_code(public_url, email)
    code = await read_stub_mailbox(backend_url, email)
    return await confirm_email_code(public_url, challenge_id, code, signer.public_key_b64)
