"""Differential oracle of the envelope decoder: the native twin against the pure reference.

Input: one control byte (bit 0: ExecuteCommand or SubscribeEvents; the rest picks the payload
limit), then the request's wire bytes. Both twins must return equal requests, or both raise
``Rejection`` with the same reason, metadata (``field``) and message, as the twin contract and
``tests/test_envelope_props.py`` require; any other exception, or a difference, is a finding.
The native module is not instrumented here (no clang), but every decision it makes is compared
with the instrumented pure twin's, so its paths are still exercised by coverage-guided inputs.

On protobuf's pure-Python backend (``fuzz_envelope_wire.py``) a disagreement is put to the pure
twin on the default backend (``referee``) first: a divergence between protobuf's own backends is
not a finding of edgeward's.
"""

from __future__ import annotations

import hashlib
from types import ModuleType

from google.protobuf.internal import api_implementation

from edgeward.native import _envelope_c, _envelope_py
from edgeward.reasons import Reason, Rejection
from tests.fuzz.referee import Referee

_KINDS = ("execute", "subscribe")
_MAX_PAYLOADS = (0, 1, 2, 32, 1024, 1 << 20)
_FIELDS = _envelope_py.SignedRequest.__slots__
_REFEREE = Referee() if api_implementation.Type() == "python" else None


def outcome(impl: ModuleType, message: bytes, max_payload: int, kind: str) -> tuple[object, ...]:
    """What ``impl`` decided, in a form that compares equal between the twins."""
    try:
        request = impl.decode_request(message, max_payload, kind)
    except Rejection as exc:
        return ("rejected", exc.reason, exc.metadata, str(exc))
    return ("ok", *(getattr(request, name) for name in _FIELDS))


def check(data: bytes) -> None:
    """Raise AssertionError when the twins disagree; let any non-``Rejection`` exception out."""
    if not data:
        return
    kind = _KINDS[data[0] & 1]
    max_payload = _MAX_PAYLOADS[(data[0] >> 1) % len(_MAX_PAYLOADS)]
    message = data[1:]
    pure = outcome(_envelope_py, message, max_payload, kind)
    native = outcome(_envelope_c, message, max_payload, kind)
    if native != pure and _REFEREE is not None:
        pure = _REFEREE.outcome(message, max_payload, kind)
    assert native == pure, f"twins disagree ({kind}, max {max_payload}) on {message!r}:\n c:  {native}\n py: {pure}"
    if pure[0] == "rejected" and pure[1] is Reason.INVALID_ENVELOPE:
        assert set(pure[2]) == {"field"}, pure
    if pure[0] == "ok":
        fields = dict(zip(_FIELDS, pure[1:], strict=True))
        assert fields["payload_digest"] == hashlib.sha256(fields["payload"]).digest()
