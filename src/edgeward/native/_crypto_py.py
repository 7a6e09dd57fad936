"""SHA-256 and Ed25519, pure-Python twin: PyNaCl's bindings to the same libsodium.

This is the reference for ``edgeward.native._crypto_c`` (ext/edgeward/native/_crypto_c.pyx): same names,
signatures, results and exceptions. Import ``edgeward.native.crypto``, which picks the active twin.
Arguments are ``bytes`` exactly (TypeError otherwise, as the native twin's typed arguments do).
"""

from __future__ import annotations

import base64
import hmac

import nacl.bindings
import nacl.exceptions
import nacl.signing

__all__ = ("PUBLIC_KEY_BYTES", "SEED_BYTES", "SIGNATURE_BYTES", "Signer", "digest_equals", "sha256", "verify")

SEED_BYTES = 32
PUBLIC_KEY_BYTES = 32
SIGNATURE_BYTES = 64


def _check_bytes(*values: object) -> None:
    for value in values:
        if type(value) is not bytes:
            raise TypeError(f"expected bytes, got {type(value).__name__}")


def sha256(data: bytes) -> bytes:
    """SHA-256 digest of ``data`` (libsodium ``crypto_hash_sha256``)."""
    _check_bytes(data)
    digest: bytes = nacl.bindings.crypto_hash_sha256(data)
    return digest


def digest_equals(a: bytes, b: bytes) -> bool:
    """Constant-time equality of two byte strings (time depends only on the length)."""
    _check_bytes(a, b)
    return hmac.compare_digest(a, b)


def verify(public_key: bytes, message: bytes, signature: bytes) -> bool:
    """True when ``signature`` is a valid Ed25519 signature of ``message`` by ``public_key``.

    A key or signature of the wrong length is simply not valid: False, never an exception.
    """
    _check_bytes(public_key, message, signature)
    if len(signature) != SIGNATURE_BYTES or len(public_key) != PUBLIC_KEY_BYTES:
        return False
    try:
        nacl.bindings.crypto_sign_open(signature + message, public_key)
    except nacl.exceptions.BadSignatureError:
        return False
    return True


class Signer:
    """An Ed25519 private key, made from its 32-byte seed."""

    __slots__ = ("_key", "public_key")

    def __init__(self, seed: bytes) -> None:
        _check_bytes(seed)
        if len(seed) != SEED_BYTES:
            raise ValueError(f"an Ed25519 seed is {SEED_BYTES} bytes, got {len(seed)}")
        self._key = nacl.signing.SigningKey(seed)
        self.public_key: bytes = bytes(self._key.verify_key)

    @classmethod
    def generate(cls) -> Signer:
        """A new key from the operating system's random source."""
        return cls(bytes(nacl.signing.SigningKey.generate()))

    @property
    def seed(self) -> bytes:
        """The 32-byte seed (what key files hold)."""
        return bytes(self._key)

    @property
    def public_key_b64(self) -> str:
        """The public key as standard base64, as the backend contract carries it."""
        return base64.b64encode(self.public_key).decode()

    def sign(self, message: bytes) -> bytes:
        """The 64-byte detached signature of ``message``."""
        _check_bytes(message)
        signature: bytes = self._key.sign(message).signature
        return signature
