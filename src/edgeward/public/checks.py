"""What a public auth request body must be, and what the anti-abuse layer learns from it.

Each of the two routes takes a JSON object with exactly its fields, all strings, each with its
own syntax (docs/edge-protection.md): an e-mail address, a challenge id, a 4 to 8 digit code, a
standard-base64 32-byte Ed25519 public key. Any fault is a ``PublicError`` (400
``invalid_request``) whose message names the field, and the body never reaches the backend. A
body that passes is classified: route, client address, the normalized e-mail or the challenge
id, the keys the public limits count under.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable

import orjson

from edgeward.native.crypto import decode_public_key

__all__ = (
    "PUBLIC_ROUTES",
    "PublicError",
    "PublicRequest",
    "PublicRoute",
    "check_body",
    "normalize_email",
)

MAX_EMAIL_CHARS = 254  # RFC 5321: a forward-path holds at most 256 octets, two of them the brackets
_MAX_LOCAL_CHARS = 64  # RFC 5321 §4.5.3.1.1
# RFC 5322 dot-atom: atext runs joined by single dots. Quoted local parts and address literals are
# refused: real sign-in addresses do not use them, and they are where parsers disagree.
_LOCAL = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")
# At least two LDH labels of 1..63 characters, not starting or ending with a hyphen; IDNs in their
# xn-- form. The last label (the TLD) starts with a letter.
_DOMAIN = re.compile(r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_CHALLENGE_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")  # the identifier alphabet of docs/protocol.md §1
_CODE = re.compile(r"[0-9]{4,8}")  # ASCII digits only: str.isdigit() would take "٣" too
_MAX_KEY_CHARS = 44  # 32 bytes in padded standard base64


class PublicError(Exception):
    """A public request refused by the gateway itself: HTTP ``status`` and body ``{"error": {code, message}}``.

    ``retry_after_s`` becomes a ``Retry-After`` header; ``close`` ends the connection after the
    answer (the rest of an oversized body is not wanted).
    """

    def __init__(
        self, status: int, code: str, message: str, *, retry_after_s: int | None = None, close: bool = False
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.retry_after_s = retry_after_s
        self.close = close


def _invalid(message: str) -> PublicError:
    return PublicError(400, "invalid_request", message)


def normalize_email(text: str) -> str | None:
    """The address as one spelling per mailbox, or None when it is not an address we accept.

    Surrounding spaces are dropped and the address lower-cased (as the backend does), and a
    ``+tag`` sub-address is dropped: ``Ada+1@x.org`` and ``ada@x.org`` reach one mailbox at
    most providers, so they share one per-e-mail limit. The body is forwarded unchanged.
    """
    email = text.strip()
    local, at, domain = email.rpartition("@")
    if (
        not at
        or len(email) > MAX_EMAIL_CHARS
        or len(local) > _MAX_LOCAL_CHARS
        or not _LOCAL.fullmatch(local)
        or not _DOMAIN.fullmatch(domain)
    ):
        return None
    mailbox = local.partition("+")[0] or local
    return f"{mailbox}@{domain}".lower()


def _check_email(value: str) -> str | None:
    if normalize_email(value) is None:
        return f"field 'email' must be an e-mail address (name@domain.tld, at most {MAX_EMAIL_CHARS} characters)"
    return None


def _check_challenge_id(value: str) -> str | None:
    if not _CHALLENGE_ID.fullmatch(value):
        return "field 'challenge_id' must be 1 to 128 characters of [A-Za-z0-9._:-]"
    return None


def _check_code(value: str) -> str | None:
    if not _CODE.fullmatch(value):
        return "field 'code' must be 4 to 8 digits"
    return None


def _check_public_key(value: str) -> str | None:
    try:
        if len(value) > _MAX_KEY_CHARS:
            raise ValueError("too long")
        decode_public_key(value)
    except ValueError:
        return "field 'client_public_key' must be a 32-byte Ed25519 public key in standard base64"
    return None


@dataclasses.dataclass(frozen=True, slots=True)
class PublicRoute:
    """A proxied endpoint: its short name, the gateway and backend path, and its fields with their checks."""

    name: str
    path: str
    fields: tuple[tuple[str, Callable[[str], str | None]], ...]


PUBLIC_ROUTES: tuple[PublicRoute, ...] = (
    PublicRoute("send-email-code", "/api/v1/public/auth/send-email-code", (("email", _check_email),)),
    PublicRoute(
        "confirm-email-code",
        "/api/v1/public/auth/confirm-email-code",
        (("challenge_id", _check_challenge_id), ("code", _check_code), ("client_public_key", _check_public_key)),
    ),
)


@dataclasses.dataclass(frozen=True, slots=True)
class PublicRequest:
    """A checked public request, classified: what its limits count it under."""

    route: str  # PublicRoute.name
    client_ip: str
    email: str | None = None  # normalized (send-email-code)
    challenge_id: str | None = None  # confirm-email-code


def check_body(route: PublicRoute, body: bytes, client_ip: str) -> PublicRequest:
    """Check ``body`` against ``route`` in a fixed order and classify it; the first fault raises ``PublicError``.

    The order: valid JSON, an object, each field present and a string (in route order), no other
    field, then each field's syntax (in route order). A body with several faults always gets
    the same answer.
    """
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise _invalid("the body is not valid JSON") from None
    if not isinstance(document, dict):
        raise _invalid("the body must be a JSON object")
    for name, _ in route.fields:
        if name not in document:
            raise _invalid(f"missing field '{name}'")
        if not isinstance(document[name], str):
            raise _invalid(f"field '{name}' must be a string")
    if len(document) != len(route.fields):
        extra = sorted(set(document) - {name for name, _ in route.fields})
        raise _invalid(f"unexpected field '{extra[0]}'")
    for name, check in route.fields:
        problem = check(document[name])
        if problem is not None:
            raise _invalid(problem)
    email = document.get("email")
    return PublicRequest(
        route.name,
        client_ip,
        email=normalize_email(email) if isinstance(email, str) else None,
        challenge_id=document.get("challenge_id"),
    )
