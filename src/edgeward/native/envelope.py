"""Decode and validate a signed request from its wire bytes; encode signed responses and events.

Step 1 of the request flow (docs/protocol.md §3 and §6.1): ``decode_request`` raises
``Rejection`` (invalid_envelope with metadata ``field``, unsupported_protocol_version,
payload_too_large) and returns a ``SignedRequest`` carrying the payload digest and the request
signing input for the later steps. ``encode_response`` / ``encode_event`` build gateway-signed
answers.

The work is done by the active twin (edgeward.native.loader): ``edgeward.native._envelope_c`` parses the
protobuf wire format by hand in C; ``edgeward.native._envelope_py`` is the reference built on the
protobuf runtime. Both are tested against each other and against the runtime's own parse.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from edgeward.native import loader

__all__ = ("PROTOCOL_VERSION", "SignedRequest", "decode_request", "encode_event", "encode_response")

if TYPE_CHECKING:  # the pure twin is the reference for types and docstrings
    from edgeward.native._envelope_py import (
        PROTOCOL_VERSION,
        SignedRequest,
        decode_request,
        encode_event,
        encode_response,
    )
else:
    _impl = loader.load("envelope")
    PROTOCOL_VERSION = _impl.PROTOCOL_VERSION
    SignedRequest = _impl.SignedRequest
    decode_request = _impl.decode_request
    encode_event = _impl.encode_event
    encode_response = _impl.encode_response
