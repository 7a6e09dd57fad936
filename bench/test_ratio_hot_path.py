"""Hot-path budgets: the native twins against raw libsodium and against their pure twins.

The "raw" baselines are single calls into libsodium through ``edgeward.native._crypto_c`` (one Cython
call wrapping ``crypto_sign_verify_detached`` / ``crypto_sign_detached``, GIL released): what a
request would cost if verifying or signing were all the gateway did.
"""

from __future__ import annotations

from typing import Any

from bench.budgets import BUDGETS
from bench.conftest import RatioMeter
from edgeward._pb import gateway_pb2
from edgeward.clock import now_ms
from edgeward.native import _crypto_c, _envelope_c, _envelope_py, _session_lru_c, _session_lru_py
from edgeward.native.session_record import SessionRecord

MAX_PAYLOAD = 65_536
FRESHNESS_MS = 300_000
PAYLOAD = b'{"display_name":"Ada Lovelace","locale":"en-GB","notes":"' + b"x" * 120 + b'"}'
CLIENT = _crypto_c.Signer(bytes(range(32)))
GATEWAY = _crypto_c.Signer(bytes(range(32, 64)))
DSID = "dsn_" + "a" * 32


def _request(timestamp_ms: int) -> bytes:
    digest = _crypto_c.sha256(PAYLOAD)
    env = gateway_pb2.RequestEnvelope(
        protocol_version=1, device_session_id=DSID, message_type="user.profile.update",
        request_id="0123456789abcdef0123456789abcdef", timestamp_ms=timestamp_ms, payload_hash=digest,
        trace_id="4bf92f3577b34da6a3ce929d0e0e4736",
    )
    unsigned = _envelope_c.decode_request(
        gateway_pb2.ExecuteCommandRequest(envelope=env, payload_bytes=PAYLOAD, signature=bytes(64)).SerializeToString(),
        MAX_PAYLOAD,
    )
    signature = CLIENT.sign(unsigned.signing_input)
    signed = gateway_pb2.ExecuteCommandRequest(envelope=env, payload_bytes=PAYLOAD, signature=signature)
    return signed.SerializeToString()


def _cache(module: Any) -> Any:
    lru = module.SessionLru(100_000, 60_000.0)
    for i in range(10_000):
        lru.put(SessionRecord(f"dsn_{i:032d}", f"usr_{i}", CLIENT.public_key, False))
    lru.put(SessionRecord(DSID, "usr_ada", CLIENT.public_key, False))
    return lru


def _check(ratio: float, budget_name: str) -> None:
    budget = BUDGETS[budget_name]
    assert budget.met(ratio), f"{budget_name}: ratio {ratio:.3f}, budget {budget.describe()}"


def test_full_verification_vs_raw_verify(measure_ratio: RatioMeter, benchmark: Any) -> None:
    data = _request(now_ms())
    lru = _cache(_session_lru_c)
    decode, verify, digest_equals = _envelope_c.decode_request, _crypto_c.verify, _crypto_c.digest_equals

    def full_verification() -> None:
        req = decode(data, MAX_PAYLOAD)
        record = lru.get(req.device_session_id)
        if record is None or record.revoked:
            raise AssertionError("session")
        if not digest_equals(req.payload_digest, req.payload_hash):
            raise AssertionError("hash")
        if not verify(record.client_public_key, req.signing_input, req.signature):
            raise AssertionError("signature")
        if abs(now_ms() - req.timestamp_ms) > FRESHNESS_MS:
            raise AssertionError("stale")

    req = _envelope_c.decode_request(data, MAX_PAYLOAD)
    signing_input, signature, key = req.signing_input, req.signature, CLIENT.public_key

    def raw_verify() -> None:
        verify(key, signing_input, signature)

    ratio = measure_ratio("full_verification", full_verification, raw_verify)
    benchmark.extra_info["ratio"] = ratio
    benchmark.pedantic(full_verification, rounds=200, iterations=1)
    _check(ratio, "full_verification")


def test_response_encode_and_sign_vs_raw_sign(measure_ratio: RatioMeter, benchmark: Any) -> None:
    body = b'{"echo":{"hello":"world"},"user_id":"usr_ada"}'
    encode = _envelope_c.encode_response
    ts = now_ms()
    signing_input = b"x" * 120  # a response signing input is about this long

    def encode_and_sign() -> None:
        encode(GATEWAY, "0123456789abcdef0123456789abcdef", "4bf92f3577b34da6a3ce929d0e0e4736", "ok", body, ts)

    def raw_sign() -> None:
        GATEWAY.sign(signing_input)

    ratio = measure_ratio("response_encode_sign", encode_and_sign, raw_sign)
    benchmark.extra_info["ratio"] = ratio
    benchmark.pedantic(encode_and_sign, rounds=500, iterations=1)
    _check(ratio, "response_encode_sign")


def test_native_decode_vs_pure(measure_ratio: RatioMeter, benchmark: Any) -> None:
    data = _request(now_ms())
    native, pure = _envelope_c.decode_request, _envelope_py.decode_request
    ratio = measure_ratio(
        "decode_speedup", lambda: native(data, MAX_PAYLOAD), lambda: pure(data, MAX_PAYLOAD)
    )
    benchmark.extra_info["ratio"] = ratio
    benchmark(native, data, MAX_PAYLOAD)
    _check(ratio, "decode_speedup")


def test_native_cache_hit_vs_pure(measure_ratio: RatioMeter, benchmark: Any) -> None:
    native, pure = _cache(_session_lru_c), _cache(_session_lru_py)
    ratio = measure_ratio("cache_hit_speedup", lambda: native.get(DSID), lambda: pure.get(DSID))
    benchmark.extra_info["ratio"] = ratio
    benchmark(native.get, DSID)
    _check(ratio, "cache_hit_speedup")
