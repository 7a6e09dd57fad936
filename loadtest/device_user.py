"""The virtual device: logs in once, sends signed commands, holds one event stream.

Runs inside Locust (gevent) only. gRPC is the synchronous API on a channel of the user's own,
its connection shared by up to 40 users (below); the locustfile calls
``grpc.experimental.gevent.init_gevent()`` before any channel exists. Requests are built
and answers verified with the SDK's pure functions: every answer's signature is checked with the
gateway's public key, and an answer that does not verify is a failure like a refused call.

Entries in Locust's statistics: ``grpc`` ``user.echo`` / ``user.profile.get`` /
``user.profile.update`` / ``SubscribeEvents``; ``stream`` ``event delivery``; ``http``
``send-email-code`` / ``stub mailbox`` / ``confirm-email-code`` / ``stub event post``.
"""

from __future__ import annotations

import itertools
import os
import secrets
import time
from typing import Any

import grpc
import orjson
from locust import User, between, task

from edgeward._pb import gateway_pb2_grpc
from edgeward.client import (
    CHANNEL_OPTIONS,
    Signer,
    build_signed_request,
    error_from_rpc,
    verify_response,
)
from loadtest.event_stream import PING_EVENT_TYPE, EventStream
from loadtest.http_api import HttpApi
from loadtest.measure import LoadTestError, Measure
from loadtest.target import Target

__all__ = ("DeviceUser",)

_RPC_TIMEOUT_S = 10.0
_RELOGIN_REASONS = frozenset({"session_not_found", "session_revoked"})
_LOGIN_PAUSE_S = 1.0  # between login attempts, so a refused login is not retried at task rate
_RUN_TAG = secrets.token_hex(4)  # e-mail addresses are new in every run (the per-mailbox limit)
_user_numbers = itertools.count(1)
# Users share gRPC connections, 40 on each: a user's event stream and its command in flight are 2
# of the gateway's 100 concurrent streams per connection (EDGEWARD_GRPC_MAX_CONCURRENT_STREAMS).
# Under gevent, one connection per user stretched every call's p99 from ~10 ms to 200-400 ms at
# 20 users (loadtest/README.md). Channels with equal arguments share a connection, so this argument
# (unknown to gRPC, which ignores it) is what puts the next 40 users on a connection of their own.
_USERS_PER_CONNECTION = 40
_CONNECTION_ARG = "edgeward.loadtest.connection"


class DeviceUser(User):
    """One device of one user (its own e-mail address, key, session and channel)."""

    wait_time = between(0.1, 0.3)
    # Set as on_start goes: Locust calls on_stop even for a user stopped in the middle of it.
    http: HttpApi | None = None
    channel: grpc.Channel | None = None
    stream: EventStream | None = None

    def on_start(self) -> None:
        self.target = Target.from_env(os.environ)
        if self.target is None:
            raise LoadTestError("no target: run through `python -m loadtest` or set EDGEWARD_LOADTEST_*")
        self.gateway_key = self.target.public_key()
        self.fire = self.environment.events.request.fire
        self.signer = Signer.generate()
        domain = os.environ.get("EDGEWARD_LOADTEST_EMAIL_DOMAIN", "example.com")
        self.number = next(_user_numbers)
        self.email = f"load-{_RUN_TAG}-{self.number}@{domain}"
        self.http = HttpApi(self.target)
        options = (*CHANNEL_OPTIONS, (_CONNECTION_ARG, (self.number - 1) // _USERS_PER_CONNECTION))
        if os.environ.get("EDGEWARD_LOADTEST_GRPC_TLS") == "1":
            self.channel = grpc.secure_channel(self.target.grpc_target, grpc.ssl_channel_credentials(), options)
        else:
            self.channel = grpc.insecure_channel(self.target.grpc_target, options)
        self.stub = gateway_pb2_grpc.EdgeGatewayStub(self.channel)
        self.session_id: str | None = None
        self.user_id = ""
        self.update_count = 0
        self.next_login_at = 0.0
        if self._login():
            self.post_event()  # one event per user at least, whatever the run's length

    def on_stop(self) -> None:
        if self.stream is not None:
            self.stream.stop()
        if self.channel is not None:
            self.channel.close()
        if self.http is not None:
            self.http.close()

    def _login(self) -> bool:
        """The public e-mail login, then one profile read to learn the user id, then the stream."""
        self.next_login_at = time.monotonic() + _LOGIN_PAUSE_S
        with Measure(self.fire, "http", "send-email-code") as sent:
            challenge_id = self.http.send_email_code(self.email)
        if not sent.ok:
            return False
        with Measure(self.fire, "http", "stub mailbox") as mailbox:
            code = self.http.read_mailbox(self.email)
        if not mailbox.ok:
            return False
        with Measure(self.fire, "http", "confirm-email-code") as confirmed:
            self.session_id = self.http.confirm_email_code(challenge_id, code, self.signer.public_key_b64)
        if not confirmed.ok:
            return False
        profile = self._execute("user.profile.get", {})
        if profile is None:
            return False
        user_id = profile.get("profile", {}).get("user_id") if isinstance(profile, dict) else None
        if not isinstance(user_id, str):  # an unhandled error: the run fails and shows it
            raise LoadTestError("user.profile.get answered without profile.user_id (the stub backend's form)")
        self.user_id = user_id
        assert self.session_id is not None
        if self.stream is not None:
            self.stream.stop()
        self.stream = EventStream(self.fire, self.stub, self.signer, self.session_id, self.gateway_key)
        return self.stream.start()

    def _execute(self, message_type: str, payload: Any) -> Any:
        """One signed ExecuteCommand, reported under its message type; the verified JSON answer or None."""
        if self.session_id is None:
            return None
        request = build_signed_request(self.signer, self.session_id, message_type, orjson.dumps(payload))
        with Measure(self.fire, "grpc", message_type) as call:
            try:
                response = self.stub.ExecuteCommand(request, timeout=_RPC_TIMEOUT_S)
            except grpc.RpcError as err:  # error_from_rpc reads a sync call's error as it reads an aio one
                refused = error_from_rpc(err)  # type: ignore[arg-type]
                if refused.reason in _RELOGIN_REASONS:
                    self.session_id = None  # the next task logs in again, as a device would
                raise refused from err
            call.length = len(response.payload_bytes)
            result = verify_response(response, self.gateway_key, request.envelope.request_id)
            if result.result_code != "ok":
                raise LoadTestError(f"result_code {result.result_code}")
        if call.ok:
            return result.json()
        return None

    @task(5)
    def profile_get(self) -> None:
        self._command("user.profile.get", {})

    @task(3)
    def echo(self) -> None:
        self._command("user.echo", {"hello": "loadtest", "user": self.number})

    @task(1)
    def profile_update(self) -> None:
        self.update_count += 1
        self._command("user.profile.update", {"display_name": f"load {self.update_count}", "locale": "en-GB"})

    @task(1)
    def post_event(self) -> None:
        """Push a ping to this device through the backend; the stream reader reports its delivery."""
        if self.stream is None or not self.stream.ready:
            return  # no stream: the failure to open it is reported already
        self.stream.report_lost()
        seq, payload = self.stream.next_ping()
        self.stream.expect(seq)
        assert self.session_id is not None
        with Measure(self.fire, "http", "stub event post") as post:
            self.http.post_event(self.user_id, self.session_id, PING_EVENT_TYPE, payload)
        if not post.ok:
            self.stream.forget(seq)

    def _command(self, message_type: str, payload: Any) -> None:
        """Send a command, or log in again when the user has no session or stream (a failed login)."""
        if self.session_id is not None and self.stream is not None:
            self._execute(message_type, payload)
        elif time.monotonic() >= self.next_login_at:
            self._login()
