"""The user commands the gateway's default route table forwards (``/api/v1/user/...``).

The gateway has verified the caller and passes who it is in ``X-User-Id`` and
``X-Device-Session-Id``; the stub trusts those headers as a real backend behind the gateway
would, and answers 401 ``missing_user`` when the user header is absent.
"""

from __future__ import annotations

from aiohttp import web

from edgeward.stub.errors import ApiError
from edgeward.stub.http_common import Route, json_response, read_json
from edgeward.stub.profiles import ProfileStore, parse_profile_update
from edgeward.stub.state import StubState

__all__ = ("UserApi",)


def _user_id(request: web.Request) -> str:
    user_id = request.headers.get("X-User-Id", "")
    if not user_id:
        raise ApiError(401, "missing_user", "X-User-Id header is required")
    return user_id


class UserApi:
    def __init__(self, state: StubState, profiles: ProfileStore) -> None:
        self._state = state
        self._profiles = profiles

    def routes(self) -> list[Route]:
        return [
            ("GET", "/api/v1/user/profile", self.get_profile, "user.profile.get"),
            ("PATCH", "/api/v1/user/profile", self.update_profile, "user.profile.update"),
            ("POST", "/api/v1/user/echo", self.echo, "user.echo"),
        ]

    async def get_profile(self, request: web.Request) -> web.Response:
        user_id = _user_id(request)
        profile = self._profiles.get(user_id, self._state.email_of(user_id))
        return json_response({"profile": profile.to_json()})

    async def update_profile(self, request: web.Request) -> web.Response:
        user_id = _user_id(request)
        changes = parse_profile_update(await read_json(request, code="invalid_profile_update"))
        profile = self._profiles.update(user_id, self._state.email_of(user_id), changes)
        return json_response({"profile": profile.to_json()})

    async def echo(self, request: web.Request) -> web.Response:
        user_id = _user_id(request)
        headers = request.headers
        return json_response(
            {
                "echo": await read_json(request, allow_empty=True),
                "user_id": user_id,
                "device_session_id": headers.get("X-Device-Session-Id"),
                "request_id": headers.get("X-Request-Id"),
                "message_type": headers.get("X-Message-Type"),
                "traceparent": headers.get("traceparent"),
            }
        )
