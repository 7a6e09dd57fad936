"""SHA-256 and Ed25519 through libsodium (PyNaCl's bundled build).

The native hot path (ext/) will call the same libsodium functions directly; this module is the
interface the rest of the gateway uses either way. Comparisons of secrets and digests are
constant-time.
"""

from __future__ import annotations

import base64
import binascii
import hmac

import nacl.bindings
import nacl.exceptions
import nacl.signing

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

SEED_BYTES = 32
PUBLIC_KEY_BYTES = 32
SIGNATURE_BYTES = 64


def sha256(data: bytes) -> bytes:
    """SHA-256 digest of ``data`` (libsodium ``crypto_hash_sha256``)."""
    return nacl.bindings.crypto_hash_sha256(data)


def digest_equals(a: bytes, b: bytes) -> bool:
    """Constant-time equality of two byte strings (time depends only on the length)."""
    return hmac.compare_digest(a, b)


def verify(public_key: bytes, message: bytes, signature: bytes) -> bool:
    """True when ``signature`` is a valid Ed25519 signature of ``message`` by ``public_key``."""
    if len(signature) != SIGNATURE_BYTES or len(public_key) != PUBLIC_KEY_BYTES:
        return False
    try:
        nacl.signing.VerifyKey(public_key).verify(message, signature)
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError, nacl.exceptions.TypeError):
        return False
    return True


def decode_public_key(text: str) -> bytes:
    """Decode a standard-base64 raw 32-byte Ed25519 public key; ValueError when it is not one."""
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("public key is not standard base64") from exc
    if len(raw) != PUBLIC_KEY_BYTES:
        raise ValueError(f"public key must be {PUBLIC_KEY_BYTES} bytes, got {len(raw)}")
    return raw


class Signer:
    """An Ed25519 private key, made from its 32-byte seed."""

    __slots__ = ("_key", "public_key")

    def __init__(self, seed: bytes) -> None:
        if len(seed) != SEED_BYTES:
            raise ValueError(f"an Ed25519 seed is {SEED_BYTES} bytes, got {len(seed)}")
        self._key = nacl.signing.SigningKey(seed)
        self.public_key: bytes = bytes(self._key.verify_key)

    @classmethod
    def generate(cls) -> Signer:
        return cls(bytes(nacl.signing.SigningKey.generate()))

    @property
    def seed(self) -> bytes:
        return bytes(self._key)

    @property
    def public_key_b64(self) -> str:
        return base64.b64encode(self.public_key).decode()

    def sign(self, message: bytes) -> bytes:
        """The 64-byte detached signature of ``message``."""
        return self._key.sign(message).signature
