"""Regenerate tests/vectors/signing.json: signing-input and Ed25519 test vectors.

Clients in other languages check their request/response/event signing against this file
(docs/test-vectors.md explains the layout). Keys are fixed seeds and Ed25519 is deterministic,
so the output is byte-for-byte stable; tests/test_vectors.py runs this script into a temporary
folder and fails when the checked-in file differs. Written with the stdlib ``json`` (sorted keys,
ASCII-only escapes) so the file has no encoding or key-order ambiguity.
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
from pathlib import Path
from typing import Any

from edgeward.native.crypto import Signer, sha256
from edgeward.native.signing import event_signing_input, request_signing_input, response_signing_input

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "tests" / "vectors"
FILE_NAME = "signing.json"

# RFC 8032 §7.1 TEST 1 secret key: a client can also check its key derivation against the RFC.
RFC8032_SEED = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
I64_MAX = 2**63 - 1
I64_MIN = -(2**63)
ENCODING_ONLY = (
    "signing-input encoding check only: the gateway rejects this envelope (invalid_envelope) because "
    "a field is outside its limits"
)

# (name, seed, envelope without payload_hash, payload, note)
Case = tuple[str, bytes, dict[str, Any], bytes, str]

REQUESTS: tuple[Case, ...] = (
    ("basic_empty_trace", b"\x01" * 32, {
        "protocol_version": 1, "device_session_id": "ds_0001", "message_type": "user.profile.get",
        "request_id": "0123456789abcdef0123456789abcdef", "timestamp_ms": 1_700_000_000_000, "trace_id": "",
    }, b"{}", ""),
    ("json_payload_with_trace", b"\x02" * 32, {
        "protocol_version": 1, "device_session_id": "sess.A-b_c:9", "message_type": "user.profile.update",
        "request_id": "req-2025-01-01T00:00:00.123Z", "timestamp_ms": 1_735_689_600_123,
        "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
    }, '{"display_name":"Zoë 🚀"}'.encode(), ""),
    ("empty_payload_negative_timestamp", b"\x03" * 32, {
        "protocol_version": 1, "device_session_id": "d", "message_type": "gateway.subscribe",
        "request_id": "ffffffffffffffff", "timestamp_ms": -1, "trace_id": "",
    }, b"", "a negative timestamp is stale at the gateway; shown for i64 two's complement"),
    ("max_lengths_max_timestamp", RFC8032_SEED, {
        "protocol_version": 1, "device_session_id": "S" * 128, "message_type": "m" * 64,
        "request_id": "r" * 128, "timestamp_ms": I64_MAX, "trace_id": "T" * 64,
    }, b"\x00\xff" * 8, "RFC 8032 TEST 1 key; every string at its maximum length"),
    ("non_ascii_device_session_id", b"\x04" * 32, {
        "protocol_version": 1, "device_session_id": "gerät-ü", "message_type": "user.echo",
        "request_id": "aaaaaaaaaaaaaaaa", "timestamp_ms": 1_700_000_000_000, "trace_id": "",
    }, b"[]", ENCODING_ONLY),
)

RESPONSES: tuple[Case, ...] = (
    ("ok_empty_trace", b"\x11" * 32, {
        "protocol_version": 1, "request_id": "0123456789abcdef0123456789abcdef",
        "timestamp_ms": 1_700_000_000_042, "result_code": "ok", "trace_id": "",
    }, b'{"display_name":"Ada"}', ""),
    ("backend_error_with_trace", b"\x12" * 32, {
        "protocol_version": 1, "request_id": "req-2025-01-01T00:00:00.123Z",
        "timestamp_ms": 1_735_689_600_200, "result_code": "profile_not_found",
        "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
    }, '{"error":{"code":"profile_not_found","message":"Kein Profil für Zoë"}}'.encode(), ""),
    ("non_ascii_result_code", b"\x13" * 32, {
        "protocol_version": 1, "request_id": "ffffffffffffffff", "timestamp_ms": 1_700_000_000_000,
        "result_code": "déjà_vu_🚀", "trace_id": "",
    }, b"{}", "result_code is the backend's string, encoded as UTF-8 bytes"),
    ("empty_payload_negative_timestamp", b"\x14" * 32, {
        "protocol_version": 1, "request_id": "aaaaaaaaaaaaaaaa", "timestamp_ms": -1_700_000_000_000,
        "result_code": "ok", "trace_id": "",
    }, b"", ""),
    ("max_timestamp", RFC8032_SEED, {
        "protocol_version": 1, "request_id": "r" * 128, "timestamp_ms": I64_MAX,
        "result_code": "ok", "trace_id": "T" * 64,
    }, b"\x00", "RFC 8032 TEST 1 key"),
)

EVENTS: tuple[Case, ...] = (
    ("server_time_empty_trace", b"\x21" * 32, {
        "protocol_version": 1, "event_id": "evt-0001", "event_type": "gateway.server_time",
        "timestamp_ms": 1_700_000_000_000, "trace_id": "",
    }, b'{"request_id":"0123456789abcdef0123456789abcdef","server_time_ms":1700000000000}', ""),
    ("non_ascii_event_id_with_trace", b"\x22" * 32, {
        "protocol_version": 1, "event_id": "événement-42", "event_type": "user.notification",
        "timestamp_ms": 1_735_689_600_999, "trace_id": "0af7651916cd43dd8448eb211c80319c",
    }, '{"text":"Grüße 👋"}'.encode(), ""),
    ("empty_payload_min_timestamp", b"\x23" * 32, {
        "protocol_version": 1, "event_id": "e", "event_type": "x", "timestamp_ms": I64_MIN, "trace_id": "",
    }, b"", ""),
    ("large_timestamp", RFC8032_SEED, {
        "protocol_version": 1, "event_id": "evt-" + "9" * 60, "event_type": "user.profile.updated",
        "timestamp_ms": I64_MAX, "trace_id": "",
    }, b'{"a":1}', "RFC 8032 TEST 1 key"),
)


def _vector(case: Case, build: Any) -> dict[str, Any]:
    name, seed, envelope, payload, note = case
    signer = Signer(seed)
    payload_hash = sha256(payload)
    signing_input: bytes = build(**envelope, payload_hash=payload_hash)
    vector = {
        "name": name,
        "seed_hex": seed.hex(),
        "public_key_hex": signer.public_key.hex(),
        "public_key_b64": base64.b64encode(signer.public_key).decode(),
        "envelope": envelope,
        "payload_bytes_hex": payload.hex(),
        "payload_hash_hex": payload_hash.hex(),
        "signing_input_hex": signing_input.hex(),
        "signature_hex": signer.sign(signing_input).hex(),
    }
    if note:
        vector["note"] = note
    return vector


def build_vectors() -> dict[str, Any]:
    """The whole document: one list of vectors per signing input."""
    return {
        "format": "edgeward signing test vectors v1 (docs/test-vectors.md)",
        "request": [_vector(c, request_signing_input) for c in REQUESTS],
        "response": [_vector(c, response_signing_input) for c in RESPONSES],
        "event": [_vector(c, event_signing_input) for c in EVENTS],
    }


def render() -> str:
    return json.dumps(build_vectors(), indent=2, sort_keys=True, ensure_ascii=True) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder [tests/vectors]")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    target = args.out / FILE_NAME
    target.write_bytes(render().encode("ascii"))
    print(f"wrote {target}", file=sys.stderr)


if __name__ == "__main__":
    main()
