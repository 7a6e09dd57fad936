"""The HTTP routes a virtual user calls besides gRPC, over plain ``requests`` (gevent-friendly).

The SDK's login helpers are asyncio (aiohttp), which does not run under Locust's gevent, so the
same three steps are made here with the same routes and bodies: ``send-email-code`` and
``confirm-email-code`` at the gateway's public listener, and the code read from the stub
backend's mailbox in between (``read_stub_mailbox``'s route). Events are posted to the stub's
test-event route (docs/stub-backend.md, "Test events"). Each method raises on an error answer;
the caller measures and reports it.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import requests

from loadtest.measure import LoadTestError
from loadtest.target import Target

__all__ = ("HttpApi",)

_TIMEOUT_S = 10.0


class HttpApi:
    """One keep-alive HTTP session per user, against the target's public and stub URLs."""

    def __init__(self, target: Target) -> None:
        self._public = target.public_url.rstrip("/")
        self._stub = target.stub_url.rstrip("/")
        self._session = requests.Session()

    def close(self) -> None:
        self._session.close()

    def _json(self, method: str, url: str, body: Any = None) -> dict[str, Any]:
        resp = self._session.request(method, url, json=body, timeout=_TIMEOUT_S)
        try:
            answer = resp.json()
        except ValueError:
            answer = None
        if resp.status_code >= 400:
            error = answer.get("error") if isinstance(answer, dict) else None
            code = error.get("code") if isinstance(error, dict) else resp.reason
            raise LoadTestError(f"HTTP {resp.status_code} {code}")
        if not isinstance(answer, dict):
            raise LoadTestError(f"HTTP {resp.status_code}: not a JSON object")
        return answer

    @staticmethod
    def _field(answer: dict[str, Any], name: str) -> str:
        value = answer.get(name)
        if not isinstance(value, str) or not value:
            raise LoadTestError(f"answer without a {name!r} string")
        return value

    def send_email_code(self, email: str) -> str:
        """The challenge id of a new login code mailed to ``email``."""
        answer = self._json("POST", f"{self._public}/api/v1/public/auth/send-email-code", {"email": email})
        return self._field(answer, "challenge_id")

    def read_mailbox(self, email: str) -> str:
        """The last code "mailed" to ``email`` (the stub's development mailbox)."""
        answer = self._json("GET", f"{self._stub}/api/v1/internal/stub/mailbox/{quote(email, safe='@')}")
        return self._field(answer, "code")

    def confirm_email_code(self, challenge_id: str, code: str, public_key_b64: str) -> str:
        """The new device session bound to ``public_key_b64``."""
        body = {"challenge_id": challenge_id, "code": code, "client_public_key": public_key_b64}
        answer = self._json("POST", f"{self._public}/api/v1/public/auth/confirm-email-code", body)
        return self._field(answer, "device_session_id")

    def post_event(self, user_id: str, device_session_id: str, event_type: str, payload: Any) -> None:
        """Push an event to one device session; an event no gateway took (no push stream) is an error."""
        body = {"user_id": user_id, "device_session_id": device_session_id, "event_type": event_type,
                "payload": payload}
        answer = self._json("POST", f"{self._stub}/api/v1/internal/stub/events", body)
        if not answer.get("gateways"):
            raise LoadTestError("no gateway holds a push stream: the event was dropped")
