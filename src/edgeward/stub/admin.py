"""Bodies and answers of the admin surface (revoke, user-blocks) as the authsession service has them.

Protocol section 5 quotes that service: ``actor`` is an object ``{"type", "id"?}`` and the
answers carry an ``outcome``. The stub mirrors the shapes exactly, so an admin tool written
against the stub works against the real service; it also still takes the older string actor,
so callers written before are not broken. It keeps no audit log: the actor is only checked.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

from edgeward.stub.errors import ApiError
from edgeward.stub.http_common import optional_str, require_str
from edgeward.stub.state import Session, normalize_email

__all__ = (
    "BlockRequest",
    "block_answer",
    "parse_block",
    "parse_revoke",
    "revoke_answer",
)

_DEFAULT_REVOKE_REASON = "session_revoked"
_MAX_REASON_CHARS = 64
_MAX_TYPE_CHARS = 64
_MAX_ID_CHARS = 256
_ACTOR_MEMBERS = frozenset({"type", "id"})
_BAD_ACTOR = 'actor must be an object {"type": string, "id"?: string} (or, the older form, a string)'

SubjectKind = Literal["email", "user_id"]


@dataclasses.dataclass(frozen=True, slots=True)
class BlockRequest:
    subject_kind: SubjectKind
    subject_value: str  # a normalized e-mail, or a user id as given
    reason_code: str


def _is_text(value: Any, max_chars: int) -> bool:
    return isinstance(value, str) and 0 < len(value) <= max_chars


def _is_actor(actor: Any) -> bool:
    """``{"type", "id"?}`` with nothing else, or the older form, a plain string."""
    if isinstance(actor, str):
        return _is_text(actor, _MAX_ID_CHARS)
    if not isinstance(actor, dict) or not set(actor) <= _ACTOR_MEMBERS:
        return False
    actor_id = actor.get("id")
    return _is_text(actor.get("type"), _MAX_TYPE_CHARS) and (actor_id is None or _is_text(actor_id, _MAX_ID_CHARS))


def _check_actor(body: dict[str, Any], *, required: bool) -> None:
    """Refuse an actor outside the contract; absent is fine only where ``required`` is false."""
    actor = body.get("actor")
    if actor is None:
        if required:
            raise ApiError(400, "invalid_request", "actor is required")
        return
    if not _is_actor(actor):
        raise ApiError(400, "invalid_request", _BAD_ACTOR)


def parse_revoke(body: dict[str, Any]) -> str:
    """The reason code of a revoke body (every field optional; an empty body is ``{}``)."""
    reason = optional_str(body, "reason_code", _MAX_REASON_CHARS) or _DEFAULT_REVOKE_REASON
    _check_actor(body, required=False)
    return reason


def parse_block(body: dict[str, Any]) -> BlockRequest:
    """A user-blocks body: exactly one of ``email`` and ``user_id``, a reason code, an actor."""
    email, user_id = optional_str(body, "email", 512), optional_str(body, "user_id")
    reason = require_str(body, "reason_code", _MAX_REASON_CHARS)
    _check_actor(body, required=True)
    if email is not None and user_id is None:
        return BlockRequest("email", normalize_email(email), reason)
    if user_id is not None and email is None:
        return BlockRequest("user_id", user_id, reason)
    raise ApiError(400, "invalid_request", "give exactly one of email and user_id")


def revoke_answer(device_session_id: str, *, revoked_now: bool) -> dict[str, Any]:
    """``affected_session_count`` counts what this call revoked: 0 for a session revoked before."""
    return {
        "outcome": "revoked",
        "device_session_id": device_session_id,
        "affected_session_count": 1 if revoked_now else 0,
    }


def block_answer(request: BlockRequest, revoked_now: list[Session]) -> dict[str, Any]:
    """The sessions this block revoked, sorted by id; those revoked before are not listed."""
    return {
        "outcome": "blocked",
        "subject_kind": request.subject_kind,
        "subject_value": request.subject_value,
        "affected_session_count": len(revoked_now),
        "affected_device_session_ids": sorted(s.device_session_id for s in revoked_now),
    }
