"""The stub's REST surface: login by e-mail code, sessions, admin actions and test helpers.

Every change of a session is pushed to connected gateways and projected to Redis before the
answer goes out, so a test that got an answer can rely on the push being queued and the
projection having been attempted.
"""

from __future__ import annotations

import re
import uuid
from collections import Counter

import orjson
from aiohttp import web

from edgeward._pb import push_pb2
from edgeward.clock import now_ms
from edgeward.stub.admin import block_answer, parse_block, parse_revoke, revoke_answer
from edgeward.stub.errors import ApiError
from edgeward.stub.http_common import (
    Route,
    RouteNames,
    error_middleware,
    json_response,
    optional_str,
    read_object,
    require_str,
)
from edgeward.stub.profiles import ProfileStore
from edgeward.stub.projection import RedisProjection
from edgeward.stub.push import PushHub
from edgeward.stub.state import Session, StubState, normalize_email
from edgeward.stub.user_api import UserApi

__all__ = ("make_app",)

_SESSION_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_TRACE_ID = re.compile(r"[A-Za-z0-9-]{0,64}")


class _IdentityApi:
    def __init__(self, state: StubState, hub: PushHub, projection: RedisProjection | None) -> None:
        self._state = state
        self._hub = hub
        self._projection = projection

    def routes(self) -> list[Route]:
        return [
            ("POST", "/api/v1/public/auth/send-email-code", self.send_code, "public.send-email-code"),
            ("POST", "/api/v1/public/auth/confirm-email-code", self.confirm, "public.confirm-email-code"),
            ("GET", "/api/v1/internal/sessions/{device_session_id}", self.get_session, "sessions.get"),
            ("POST", "/api/v1/internal/sessions/{device_session_id}/revoke", self.revoke, "sessions.revoke"),
            ("POST", "/api/v1/internal/user-blocks", self.block_user, "user-blocks"),
            ("GET", "/api/v1/internal/stub/mailbox/{email}", self.mailbox, "stub.mailbox"),
            ("POST", "/api/v1/internal/stub/events", self.post_event, "stub.events"),
            ("GET", "/healthz", self.healthz, "healthz"),
        ]

    async def send_code(self, request: web.Request) -> web.Response:
        body = await read_object(request)
        challenge = self._state.send_code(normalize_email(require_str(body, "email", 512)))
        return json_response({"challenge_id": challenge.challenge_id})

    async def confirm(self, request: web.Request) -> web.Response:
        body = await read_object(request)
        challenge_id = require_str(body, "challenge_id")
        code = require_str(body, "code", 16)
        key = require_str(body, "client_public_key", 128)
        session, forgotten = self._state.confirm(challenge_id, code, key)
        await self._project([session], forgotten)
        return json_response({"device_session_id": session.device_session_id})

    async def get_session(self, request: web.Request) -> web.Response:
        session = self._state.session(request.match_info["device_session_id"])
        return json_response({"session": session.to_json()})

    async def revoke(self, request: web.Request) -> web.Response:
        reason = parse_revoke(await read_object(request, allow_empty=True))
        session, revoked_at_ms, revoked_now = self._state.revoke(request.match_info["device_session_id"], now_ms())
        self._hub.publish(
            push_pb2.PushEvent(
                session_invalidation=push_pb2.SessionInvalidation(
                    device_session_id=session.device_session_id,
                    user_id=session.user_id,
                    revoked_at_ms=revoked_at_ms,
                    reason_code=reason,
                )
            )
        )
        await self._project([session])
        return json_response(revoke_answer(session.device_session_id, revoked_now=revoked_now))

    async def block_user(self, request: web.Request) -> web.Response:
        block = parse_block(await read_object(request))
        if block.subject_kind == "email":
            user = self._state.find_user(email=block.subject_value)
        else:
            user = self._state.find_user(user_id=block.subject_value)
        at_ms = now_ms()
        revoked = self._state.block(user, at_ms)
        self._hub.publish(
            push_pb2.PushEvent(
                session_invalidation=push_pb2.SessionInvalidation(
                    user_id=user.user_id, revoked_at_ms=at_ms, reason_code=block.reason_code
                )
            )
        )
        await self._project(revoked)
        return json_response(block_answer(block, revoked))

    async def mailbox(self, request: web.Request) -> web.Response:
        code, challenge_id = self._state.mailbox(normalize_email(request.match_info["email"]))
        return json_response({"code": code, "challenge_id": challenge_id})

    async def post_event(self, request: web.Request) -> web.Response:
        body = await read_object(request)
        user_id = require_str(body, "user_id", 128)
        event_type = require_str(body, "event_type", 128)
        if body.get("device_session_id") == "":
            del body["device_session_id"]
        dsid = optional_str(body, "device_session_id", 128) or ""
        if dsid and _SESSION_ID.fullmatch(dsid) is None:
            raise ApiError(400, "invalid_request", "device_session_id must be 1..128 of [A-Za-z0-9._:-]")
        trace_id = body.get("trace_id", "")
        if not isinstance(trace_id, str) or _TRACE_ID.fullmatch(trace_id) is None:
            raise ApiError(400, "invalid_request", "trace_id must be 0..64 of [A-Za-z0-9-]")
        if "payload" not in body:  # a misspelt key would otherwise push a silent null
            raise ApiError(400, "invalid_request", "payload is required (any JSON value, null included)")
        event_id = uuid.uuid4().hex
        gateways = self._hub.publish(
            push_pb2.PushEvent(
                client_event=push_pb2.ClientEvent(
                    event_id=event_id,
                    event_type=event_type,
                    user_id=user_id,
                    device_session_id=dsid,
                    payload_bytes=orjson.dumps(body["payload"]),
                    timestamp_ms=now_ms(),
                    trace_id=trace_id,
                )
            )
        )
        return json_response({"event_id": event_id, "gateways": gateways})

    async def healthz(self, _request: web.Request) -> web.Response:
        return json_response({"status": "ok"})

    async def _project(self, sessions: list[Session], forgotten: list[str] | None = None) -> None:
        if self._projection is not None:
            await self._projection.write([s.projection() for s in sessions], forgotten or ())


def make_app(
    state: StubState,
    profiles: ProfileStore,
    hub: PushHub,
    projection: RedisProjection | None,
    calls: Counter[str],
    *,
    max_body_bytes: int,
) -> web.Application:
    names: RouteNames = {}
    app = web.Application(middlewares=[error_middleware(names, calls)], client_max_size=max_body_bytes)
    identity = _IdentityApi(state, hub, projection)
    for method, path, handler, name in (*identity.routes(), *UserApi(state, profiles).routes()):
        names[app.router.add_route(method, path, handler)] = name
    return app
