"""The device session record as the gateway keeps it.

Built from the backend's JSON (``GET /api/v1/internal/sessions/{id}``) or from the Redis
projection (``gateway:session:{id}``): both carry the same fields. The client public key is
decoded here, once, when the record enters the gateway, never per request.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from edgeward.native.crypto import decode_public_key

__all__ = ("SessionRecord", "parse_session")


@dataclasses.dataclass(frozen=True, slots=True)
class SessionRecord:
    device_session_id: str
    user_id: str
    client_public_key: bytes  # raw 32-byte Ed25519 key
    revoked: bool
    revoked_at_ms: int | None = None


def parse_session(obj: Mapping[str, Any]) -> SessionRecord:
    """Validate one session object; ValueError names the first bad field."""
    dsid, user_id, key, status = (
        obj.get("device_session_id"),
        obj.get("user_id"),
        obj.get("client_public_key"),
        obj.get("status"),
    )
    if not isinstance(dsid, str) or not dsid:
        raise ValueError("device_session_id must be a non-empty string")
    if not isinstance(user_id, str) or not user_id:
        raise ValueError("user_id must be a non-empty string")
    if not isinstance(key, str):
        raise ValueError("client_public_key must be a string")
    if status not in ("active", "revoked"):
        raise ValueError("status must be 'active' or 'revoked'")
    revoked_at = obj.get("revoked_at_ms")
    if revoked_at is not None:
        # Redis stream values are strings; the JSON forms carry integers.
        try:
            revoked_at = int(revoked_at)
        except (TypeError, ValueError):
            raise ValueError("revoked_at_ms must be an integer") from None
    return SessionRecord(dsid, user_id, decode_public_key(key), status == "revoked", revoked_at)
