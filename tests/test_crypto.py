"""Both crypto twins against RFC 8032 and SHA-256 known answers, hashlib, and each other."""

from __future__ import annotations

import hashlib
from types import ModuleType

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeward.native import _crypto_py

# RFC 8032 section 7.1, tests 1 to 3: (secret seed, public key, message, signature).
RFC8032 = [
    (
        "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
        "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
        "",
"e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e06522490155"
        "5fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
    ),
    (
        "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
        "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
        "72",
"92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da"
        "085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00",
    ),
    (
        "c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7",
        "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025",
        "af82",
"6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac"
        "18ff9b538d16f290ae67f760984dc6594a7c15e9716ed28dc027beceea1ec40a",
    ),
]

# FIPS 180-2 examples.
SHA256 = [
    (b"", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"),
    (b"abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"),
    (
        b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
        "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1",
    ),
    (b"a" * 1_000_000, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"),
]


@pytest.mark.parametrize(("seed", "public", "message", "signature"), RFC8032)
def test_rfc8032_sign_and_verify(
    crypto_impl: ModuleType, seed: str, public: str, message: str, signature: str
) -> None:
    signer = crypto_impl.Signer(bytes.fromhex(seed))
    msg, sig = bytes.fromhex(message), bytes.fromhex(signature)
    assert signer.public_key == bytes.fromhex(public)
    assert signer.seed == bytes.fromhex(seed)
    assert signer.sign(msg) == sig
    assert crypto_impl.verify(signer.public_key, msg, sig)
    assert not crypto_impl.verify(signer.public_key, msg + b"\x00", sig)


@pytest.mark.parametrize(("data", "digest"), SHA256, ids=["empty", "abc", "448-bit", "million-a"])
def test_sha256_known_answers(crypto_impl: ModuleType, data: bytes, digest: str) -> None:
    assert crypto_impl.sha256(data).hex() == digest


def test_wrong_lengths_do_not_verify(crypto_impl: ModuleType) -> None:
    signer = crypto_impl.Signer(bytes(32))
    sig = signer.sign(b"m")
    assert not crypto_impl.verify(signer.public_key[:31], b"m", sig)
    assert not crypto_impl.verify(signer.public_key, b"m", sig[:63])
    assert not crypto_impl.verify(signer.public_key, b"m", sig + b"\x00")


def test_digest_equals(crypto_impl: ModuleType) -> None:
    assert crypto_impl.digest_equals(b"", b"")
    assert crypto_impl.digest_equals(b"a" * 32, b"a" * 32)
    assert not crypto_impl.digest_equals(b"a" * 32, b"a" * 31 + b"b")
    assert not crypto_impl.digest_equals(b"a" * 32, b"a" * 31)


@pytest.mark.parametrize("bad", [bytearray(b"x"), memoryview(b"x"), "x", None])
def test_arguments_must_be_bytes(crypto_impl: ModuleType, bad: object) -> None:
    for call in (
        lambda: crypto_impl.sha256(bad),
        lambda: crypto_impl.digest_equals(b"x", bad),
        lambda: crypto_impl.verify(bytes(32), bad, bytes(64)),
        lambda: crypto_impl.Signer(bad),
        lambda: crypto_impl.Signer(bytes(32)).sign(bad),
    ):
        with pytest.raises(TypeError):
            call()


def test_seed_length_is_checked(crypto_impl: ModuleType) -> None:
    with pytest.raises(ValueError, match="32 bytes, got 31"):
        crypto_impl.Signer(bytes(31))


def test_generated_keys_are_distinct_and_work(crypto_impl: ModuleType) -> None:
    a, b = crypto_impl.Signer.generate(), crypto_impl.Signer.generate()
    assert a.seed != b.seed and len(a.public_key) == 32
    assert crypto_impl.verify(a.public_key, b"hi", a.sign(b"hi"))
    assert a.public_key_b64 == _crypto_py.Signer(a.seed).public_key_b64


@pytest.mark.native
@settings(max_examples=200, deadline=None)
@given(seed=st.binary(min_size=32, max_size=32), message=st.binary(max_size=512), flip=st.integers(0, 511))
def test_twins_agree_with_each_other_and_hashlib(seed: bytes, message: bytes, flip: int) -> None:
    from edgeward.native import _crypto_c

    native, pure = _crypto_c.Signer(seed), _crypto_py.Signer(seed)
    assert native.public_key == pure.public_key
    sig = native.sign(message)
    assert sig == pure.sign(message)  # Ed25519 is deterministic
    assert _crypto_c.sha256(message) == _crypto_py.sha256(message) == hashlib.sha256(message).digest()
    tampered = bytearray(sig)
    tampered[flip % 64] ^= 1 << (flip % 8)
    for impl in (_crypto_c, _crypto_py):
        assert impl.verify(pure.public_key, message, sig)
        assert not impl.verify(pure.public_key, message, bytes(tampered))
