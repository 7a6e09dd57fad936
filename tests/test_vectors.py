"""tests/vectors/signing.json agrees with signing.py, crypto.py, an independent encoder and its generator.

The independent encoder below builds the signing inputs from docs/protocol.md §2 with
``int.to_bytes`` only, so a bug shared by signing.py and the generator cannot hide.
"""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from edgeward.native import signing
from edgeward.native.crypto import Signer, sha256, verify

ROOT = Path(__file__).resolve().parent.parent
VECTORS_FILE = ROOT / "tests" / "vectors" / "signing.json"
DOC = json.loads(VECTORS_FILE.read_text())
KINDS = ("request", "response", "event")
# RFC 8032 §7.1 TEST 1: its seed is used by some vectors; its public key is fixed by the RFC.
RFC8032_SEED = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60"
RFC8032_PUBLIC_KEY = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"

# (domain string, envelope fields in field-number order with their encodings)
LAYOUT: dict[str, tuple[str, tuple[tuple[str, str], ...]]] = {
    "request": ("edgeward.request.v1", (
        ("protocol_version", "u32"), ("device_session_id", "str"), ("message_type", "str"),
        ("request_id", "str"), ("timestamp_ms", "i64"), ("payload_hash", "bytes"), ("trace_id", "str"),
    )),
    "response": ("edgeward.response.v1", (
        ("protocol_version", "u32"), ("request_id", "str"), ("timestamp_ms", "i64"),
        ("result_code", "str"), ("payload_hash", "bytes"), ("trace_id", "str"),
    )),
    "event": ("edgeward.event.v1", (
        ("protocol_version", "u32"), ("event_id", "str"), ("event_type", "str"),
        ("timestamp_ms", "i64"), ("payload_hash", "bytes"), ("trace_id", "str"),
    )),
}
BUILDERS = {
    "request": signing.request_signing_input,
    "response": signing.response_signing_input,
    "event": signing.event_signing_input,
}


def cases() -> list[Any]:
    return [pytest.param(kind, v, id=f"{kind}-{v['name']}") for kind in KINDS for v in DOC[kind]]


def fields(vector: dict[str, Any]) -> dict[str, Any]:
    return {**vector["envelope"], "payload_hash": bytes.fromhex(vector["payload_hash_hex"])}


def independent_signing_input(kind: str, values: dict[str, Any]) -> bytes:
    domain, layout = LAYOUT[kind]
    out = bytearray(domain.encode("ascii") + b"\x00")
    for name, encoding in layout:
        value = values[name]
        if encoding == "u32":
            out += value.to_bytes(4, "big")
        elif encoding == "i64":
            out += value.to_bytes(8, "big", signed=True)
        else:
            raw = value.encode("utf-8") if encoding == "str" else value
            out += len(raw).to_bytes(4, "big") + raw
    return bytes(out)


def flip_bit(data: bytes, bit: int) -> bytes:
    flipped = bytearray(data)
    flipped[bit // 8] ^= 1 << (bit % 8)
    return bytes(flipped)


def test_every_kind_covers_the_edge_cases() -> None:
    for kind in KINDS:
        vectors = DOC[kind]
        assert len(vectors) >= 4
        assert any(v["envelope"]["trace_id"] == "" for v in vectors)
        assert any(v["payload_bytes_hex"] == "" for v in vectors)
        assert any(v["envelope"]["timestamp_ms"] < 0 for v in vectors)
        assert any(v["envelope"]["timestamp_ms"] >= 2**62 for v in vectors)
        assert any(not s.isascii() for v in vectors for s in v["envelope"].values() if isinstance(s, str))
        assert len({v["name"] for v in vectors}) == len(vectors)


@pytest.mark.parametrize(("kind", "vector"), cases())
def test_keys_and_payload_hash(kind: str, vector: dict[str, Any]) -> None:
    signer = Signer(bytes.fromhex(vector["seed_hex"]))
    assert signer.public_key.hex() == vector["public_key_hex"]
    assert base64.b64decode(vector["public_key_b64"], validate=True) == signer.public_key
    payload = bytes.fromhex(vector["payload_bytes_hex"])
    assert sha256(payload).hex() == vector["payload_hash_hex"] == hashlib.sha256(payload).hexdigest()
    if vector["seed_hex"] == RFC8032_SEED:
        assert vector["public_key_hex"] == RFC8032_PUBLIC_KEY


@pytest.mark.parametrize(("kind", "vector"), cases())
def test_signing_py_reproduces_the_signing_input(kind: str, vector: dict[str, Any]) -> None:
    assert BUILDERS[kind](**fields(vector)).hex() == vector["signing_input_hex"]


@pytest.mark.parametrize(("kind", "vector"), cases())
def test_independent_encoder_reproduces_the_signing_input(kind: str, vector: dict[str, Any]) -> None:
    assert independent_signing_input(kind, fields(vector)).hex() == vector["signing_input_hex"]


@pytest.mark.parametrize(("kind", "vector"), cases())
def test_signer_reproduces_the_signature(kind: str, vector: dict[str, Any]) -> None:
    signer = Signer(bytes.fromhex(vector["seed_hex"]))
    assert signer.sign(bytes.fromhex(vector["signing_input_hex"])).hex() == vector["signature_hex"]


@pytest.mark.parametrize(("kind", "vector"), cases())
def test_verify_accepts_the_signature_and_rejects_any_flipped_bit(kind: str, vector: dict[str, Any]) -> None:
    key = bytes.fromhex(vector["public_key_hex"])
    message = bytes.fromhex(vector["signing_input_hex"])
    signature = bytes.fromhex(vector["signature_hex"])
    assert verify(key, message, signature)
    for bit in (0, 7, 255, 256, 511):
        assert not verify(key, message, flip_bit(signature, bit))
    for bit in (0, len(message) * 4, len(message) * 8 - 1):
        assert not verify(key, flip_bit(message, bit), signature)
    assert not verify(flip_bit(key, 0), message, signature)


def test_generator_reproduces_the_checked_in_file(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "gen_vectors.py"), "--out", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )
    assert result.returncode == 0, result.stderr
    fresh = (tmp_path / VECTORS_FILE.name).read_bytes()
    assert fresh == VECTORS_FILE.read_bytes(), "run `python tools/gen_vectors.py` and commit the result"
