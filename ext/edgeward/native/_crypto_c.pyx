"""SHA-256 and Ed25519 through libsodium, native twin of ``edgeward.native._crypto_py`` (the reference).

Each libsodium call runs with the GIL released, so a signature check on one thread never stalls
another. Import ``edgeward.native.crypto``, which picks the active twin.
"""

import base64

from libc.string cimport memcpy

from edgeward.native._sodium cimport (
    crypto_hash_sha256,
    crypto_sign_detached,
    crypto_sign_seed_keypair,
    crypto_sign_verify_detached,
    randombytes_buf,
    sodium_init,
    sodium_memcmp,
    sodium_memzero,
)

__all__ = ("PUBLIC_KEY_BYTES", "SEED_BYTES", "SIGNATURE_BYTES", "Signer", "digest_equals", "sha256", "verify")

SEED_BYTES = 32
PUBLIC_KEY_BYTES = 32
SIGNATURE_BYTES = 64

if sodium_init() < 0:
    raise ImportError("libsodium failed to initialize")


def sha256(bytes data not None) -> bytes:
    """SHA-256 digest of ``data`` (libsodium ``crypto_hash_sha256``)."""
    cdef unsigned char out[32]
    cdef const unsigned char *ptr = <const unsigned char *>data
    cdef unsigned long long n = <unsigned long long>len(data)
    with nogil:
        crypto_hash_sha256(out, ptr, n)
    return out[:32]


def digest_equals(bytes a not None, bytes b not None) -> bool:
    """Constant-time equality of two byte strings (time depends only on the length)."""
    cdef size_t n = <size_t>len(a)
    if n != <size_t>len(b):
        return False
    return sodium_memcmp(<const unsigned char *>a, <const unsigned char *>b, n) == 0


def verify(bytes public_key not None, bytes message not None, bytes signature not None) -> bool:
    """True when ``signature`` is a valid Ed25519 signature of ``message`` by ``public_key``.

    A key or signature of the wrong length is simply not valid: False, never an exception.
    """
    cdef int rc
    if len(signature) != 64 or len(public_key) != 32:
        return False
    cdef const unsigned char *sig = <const unsigned char *>signature
    cdef const unsigned char *pk = <const unsigned char *>public_key
    cdef const unsigned char *msg = <const unsigned char *>message
    cdef unsigned long long n = <unsigned long long>len(message)
    with nogil:
        rc = crypto_sign_verify_detached(sig, msg, n, pk)
    return rc == 0


cdef class Signer:
    """An Ed25519 private key, made from its 32-byte seed."""

    cdef unsigned char _sk[64]
    cdef unsigned char _seed[32]
    cdef readonly bytes public_key

    def __init__(self, bytes seed not None) -> None:
        cdef unsigned char pk[32]
        if len(seed) != 32:
            raise ValueError(f"an Ed25519 seed is {SEED_BYTES} bytes, got {len(seed)}")
        memcpy(self._seed, <const unsigned char *>seed, 32)
        crypto_sign_seed_keypair(pk, self._sk, self._seed)
        self.public_key = pk[:32]

    def __dealloc__(self):
        sodium_memzero(self._sk, 64)
        sodium_memzero(self._seed, 32)

    @classmethod
    def generate(cls) -> Signer:
        """A new key from the operating system's random source."""
        cdef unsigned char seed[32]
        randombytes_buf(seed, 32)
        try:
            return cls(seed[:32])
        finally:
            sodium_memzero(seed, 32)

    @property
    def seed(self) -> bytes:
        """The 32-byte seed (what key files hold)."""
        return self._seed[:32]

    @property
    def public_key_b64(self) -> str:
        """The public key as standard base64, as the backend contract carries it."""
        return base64.b64encode(self.public_key).decode()

    def sign(self, bytes message not None) -> bytes:
        """The 64-byte detached signature of ``message``."""
        cdef unsigned char sig[64]
        cdef const unsigned char *msg = <const unsigned char *>message
        cdef unsigned long long n = <unsigned long long>len(message)
        with nogil:
            crypto_sign_detached(sig, NULL, msg, n, self._sk)
        return sig[:64]
