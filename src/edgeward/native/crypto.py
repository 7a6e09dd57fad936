"""SHA-256 and Ed25519 through libsodium: the interface the rest of the gateway uses.

The work is done by the active twin (edgeward.native.loader): ``edgeward.native._crypto_c`` calls libsodium
directly with the GIL released; ``edgeward.native._crypto_py`` goes through PyNaCl. Both are tested
against RFC 8032 and SHA-256 known answers and against each other. Comparisons of digests are
constant-time.
"""

from __future__ import annotations

import base64
import binascii
from typing import TYPE_CHECKING

from edgeward.native import loader

__all__ = (
    "PUBLIC_KEY_BYTES",
    "SEED_BYTES",
    "SIGNATURE_BYTES",
    "Signer",
    "decode_public_key",
    "digest_equals",
    "sha256",
    "verify",
)

if TYPE_CHECKING:  # the pure twin is the reference for types and docstrings
    from edgeward.native._crypto_py import (
        PUBLIC_KEY_BYTES,
        SEED_BYTES,
        SIGNATURE_BYTES,
        Signer,
        digest_equals,
        sha256,
        verify,
    )
else:
    _impl = loader.load("crypto")
    PUBLIC_KEY_BYTES = _impl.PUBLIC_KEY_BYTES
    SEED_BYTES = _impl.SEED_BYTES
    SIGNATURE_BYTES = _impl.SIGNATURE_BYTES
    Signer = _impl.Signer
    digest_equals = _impl.digest_equals
    sha256 = _impl.sha256
    verify = _impl.verify


def decode_public_key(text: str) -> bytes:
    """Decode a standard-base64 raw 32-byte Ed25519 public key; ValueError when it is not one."""
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("public key is not standard base64") from exc
    if len(raw) != PUBLIC_KEY_BYTES:
        raise ValueError(f"public key must be {PUBLIC_KEY_BYTES} bytes, got {len(raw)}")
    return raw
