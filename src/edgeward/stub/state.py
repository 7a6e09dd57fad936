"""The stub's in-memory identity model: e-mail challenges, users and device sessions.

Everything a client can make grow is capped, oldest first: a load test may log in millions of
times and the stub must keep running. Forgetting is the stub's only form of cleanup, so a
forgotten session answers 404 exactly like one that never existed. Nothing here awaits, so a
mutation and the snapshot taken of it are atomic with respect to other requests.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime
import secrets
from collections import OrderedDict
from typing import Any, TypeVar

from edgeward.clock import monotonic_ms, now_ms
from edgeward.native.crypto import decode_public_key, digest_equals
from edgeward.stub.errors import ApiError

__all__ = ("MAX_WRONG_CODES", "Challenge", "Session", "StubState", "User", "normalize_email")

MAX_WRONG_CODES = 5
_MAX_EMAIL_CHARS = 254

K = TypeVar("K")
V = TypeVar("V")


def normalize_email(text: str) -> str:
    """One spelling per mailbox, so two logins with ``A@x.org `` and ``a@x.org`` are one user."""
    email = text.strip().lower()
    local, at, domain = email.partition("@")
    if not at or not local or not domain or "@" in domain or len(email) > _MAX_EMAIL_CHARS:
        raise ApiError(400, "invalid_email", "email must look like name@domain (at most 254 characters)")
    if any(ch.isspace() for ch in email):
        raise ApiError(400, "invalid_email", "email must not contain whitespace")
    return email


def _rfc3339_utc(unix_ms: int) -> str:
    """``2026-04-05T12:00:00Z``: RFC 3339 in UTC with ``Z``, whole seconds, as the contract's example."""
    moment = datetime.datetime.fromtimestamp(unix_ms // 1000, datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _insert(table: OrderedDict[K, V], key: K, value: V, limit: int) -> list[V]:
    """Store as newest and return what fell off the old end."""
    table[key] = value
    table.move_to_end(key)
    evicted: list[V] = []
    while len(table) > limit:
        evicted.append(table.popitem(last=False)[1])
    return evicted


@dataclasses.dataclass(slots=True)
class Challenge:
    challenge_id: str
    email: str
    code: str
    expires_at_ms: float  # monotonic clock
    wrong_codes: int = 0


@dataclasses.dataclass(slots=True)
class User:
    user_id: str
    email: str
    blocked: bool = False
    session_ids: set[str] = dataclasses.field(default_factory=set)


@dataclasses.dataclass(slots=True)
class Session:
    device_session_id: str
    user_id: str
    client_public_key: str  # canonical standard base64 of the raw 32-byte key
    created_at_ms: int
    revoked_at_ms: int | None = None

    @property
    def status(self) -> str:
        return "active" if self.revoked_at_ms is None else "revoked"

    def projection(self) -> dict[str, Any]:
        """The contract's session object, as the Redis projection stores it."""
        obj: dict[str, Any] = {
            "device_session_id": self.device_session_id,
            "user_id": self.user_id,
            "client_public_key": self.client_public_key,
            "status": self.status,
        }
        if self.revoked_at_ms is not None:
            obj["revoked_at_ms"] = self.revoked_at_ms
        return obj

    def to_json(self) -> dict[str, Any]:
        """The contract's session object as ``GET /api/v1/internal/sessions/{id}`` answers it."""
        return {**self.projection(), "created_at": _rfc3339_utc(self.created_at_ms)}


class StubState:
    def __init__(
        self, *, challenge_ttl_ms: int, max_challenges: int, max_sessions: int, max_users: int
    ) -> None:
        self._challenge_ttl_ms = challenge_ttl_ms
        self._max_challenges = max_challenges
        self._max_sessions = max_sessions
        self._max_users = max_users
        self._challenges: OrderedDict[str, Challenge] = OrderedDict()
        self._mailbox: OrderedDict[str, tuple[str, str]] = OrderedDict()  # email -> (code, challenge_id)
        self._sessions: OrderedDict[str, Session] = OrderedDict()
        self._users: OrderedDict[str, User] = OrderedDict()
        self._user_by_email: dict[str, str] = {}

    def send_code(self, email: str) -> Challenge:
        """A new challenge for a normalized e-mail; its code lands in the mailbox."""
        self._drop_expired_challenges()
        challenge = Challenge(
            challenge_id="chl_" + secrets.token_urlsafe(18),
            email=email,
            code=f"{secrets.randbelow(1_000_000):06d}",
            expires_at_ms=monotonic_ms() + self._challenge_ttl_ms,
        )
        _insert(self._challenges, challenge.challenge_id, challenge, self._max_challenges)
        _insert(self._mailbox, email, (challenge.code, challenge.challenge_id), self._max_challenges)
        return challenge

    def mailbox(self, email: str) -> tuple[str, str]:
        """(code, challenge_id) of the latest code sent to ``email``."""
        found = self._mailbox.get(email)
        if found is None:
            raise ApiError(404, "mailbox_empty", "no code was sent to this e-mail")
        return found

    def confirm(self, challenge_id: str, code: str, client_public_key: str) -> tuple[Session, list[str]]:
        """Spend a challenge on a new device session; also returns the ids of sessions forgotten."""
        try:
            raw_key = decode_public_key(client_public_key)
        except ValueError as exc:
            raise ApiError(400, "invalid_client_public_key", str(exc)) from None
        challenge = self._challenges.get(challenge_id)
        if challenge is None:
            raise ApiError(404, "challenge_not_found", "unknown or already used challenge_id")
        if monotonic_ms() >= challenge.expires_at_ms:
            del self._challenges[challenge_id]
            raise ApiError(410, "challenge_expired", "the code expired: request a new one")
        if challenge.wrong_codes >= MAX_WRONG_CODES:
            raise ApiError(429, "too_many_attempts", "too many wrong codes: request a new one")
        if not digest_equals(code.encode(), challenge.code.encode()):
            challenge.wrong_codes += 1
            left = MAX_WRONG_CODES - challenge.wrong_codes
            raise ApiError(400, "invalid_code", f"wrong code, {left} attempt(s) left")
        del self._challenges[challenge_id]
        user = self._user_for_login(challenge.email)
        session = Session(
            device_session_id="dsn_" + secrets.token_urlsafe(24),
            user_id=user.user_id,
            client_public_key=base64.b64encode(raw_key).decode(),
            created_at_ms=now_ms(),
        )
        user.session_ids.add(session.device_session_id)
        evicted = _insert(self._sessions, session.device_session_id, session, self._max_sessions)
        for old in evicted:
            owner = self._users.get(old.user_id)
            if owner is not None:
                owner.session_ids.discard(old.device_session_id)
        return session, [old.device_session_id for old in evicted]

    def session(self, device_session_id: str) -> Session:
        found = self._sessions.get(device_session_id)
        if found is None:
            raise ApiError(404, "session_not_found", "unknown device_session_id")
        return found

    def revoke(self, device_session_id: str, at_ms: int) -> tuple[Session, int, bool]:
        """(session, its revoked_at_ms, revoked by this call): a repeat keeps the first time."""
        session = self.session(device_session_id)
        if session.revoked_at_ms is not None:
            return session, session.revoked_at_ms, False
        session.revoked_at_ms = at_ms
        return session, at_ms, True

    def find_user(self, *, email: str | None = None, user_id: str | None = None) -> User:
        if email is not None:
            user_id = self._user_by_email.get(email)
        user = self._users.get(user_id) if user_id is not None else None
        if user is None:
            raise ApiError(404, "user_not_found", "unknown user")
        return user

    def block(self, user: User, at_ms: int) -> list[Session]:
        """Block ``user`` and revoke its active sessions; returns the sessions revoked now."""
        user.blocked = True
        revoked: list[Session] = []
        for dsid in sorted(user.session_ids):
            session = self._sessions.get(dsid)
            if session is not None and session.revoked_at_ms is None:
                session.revoked_at_ms = at_ms
                revoked.append(session)
        return revoked

    def email_of(self, user_id: str) -> str | None:
        user = self._users.get(user_id)
        return None if user is None else user.email

    def _user_for_login(self, email: str) -> User:
        user_id = self._user_by_email.get(email)
        user = self._users.get(user_id) if user_id is not None else None
        if user is not None and user.blocked:
            raise ApiError(403, "user_blocked", "this user is blocked")
        if user is None:
            user = User(user_id="usr_" + secrets.token_urlsafe(12), email=email)
            self._user_by_email[email] = user.user_id
            for old in _insert(self._users, user.user_id, user, self._max_users):
                if self._user_by_email.get(old.email) == old.user_id:
                    del self._user_by_email[old.email]
        return user

    def _drop_expired_challenges(self) -> None:
        # One TTL for all: insertion order is expiry order, so expired ones are at the front.
        now = monotonic_ms()
        while self._challenges:
            oldest = next(iter(self._challenges.values()))
            if oldest.expires_at_ms > now:
                break
            del self._challenges[oldest.challenge_id]
