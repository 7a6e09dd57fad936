"""Every checked-in fuzz case passes its oracle, and each finding of the fuzzers stays fixed.

The findings (docs/fuzzing.md lists them) keep their reproducer twice: as bytes here, where the
test says what the fix guarantees, and as a file in ``corpus/<target>/finding-*``, so that
every fuzzing run starts from it.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from edgeward.io import resp
from tests.fuzz import oracle_http11, oracle_resp
from tests.fuzz.seeds import HERE, ORACLES, vector_requests
from tests.fuzz.support import retrieved

CASES = [
    (oracle, path) for oracle in sorted(set(ORACLES.values())) for path in sorted((HERE / "corpus" / oracle).iterdir())
]


@pytest.mark.parametrize(("oracle", "path"), CASES, ids=[f"{o}/{p.name}" for o, p in CASES])
def test_corpus_case_passes_its_oracle(oracle: str, path: Path) -> None:
    importlib.import_module(f"tests.fuzz.oracle_{oracle}").check(path.read_bytes())


def test_vector_requests_seed_both_outcomes() -> None:
    """The seeds reach the end of the checks (accepted) and a field check (the vector whose
    session id is not ASCII: signing vectors cover more than the gateway accepts)."""
    from tests.fuzz import oracle_envelope

    outcomes = []
    for data in vector_requests():
        oracle_envelope.check(data)
        outcomes.append(oracle_envelope.outcome(oracle_envelope._envelope_py, data[1:], 1024, "execute")[0])
    assert outcomes.count("ok") == len(outcomes) - 2 and outcomes[-2:] == ["rejected", "rejected"]


# -- RESP ---------------------------------------------------------------------------------


def test_resp3_false_reply_is_a_reply_not_the_end_of_the_data() -> None:
    """hiredis's "no reply yet" was False, which is also its RESP3 boolean false: the reply was
    dropped and the next one given to the wrong command, depending on where reads ended."""
    stream = b"#f\r\n+OK\r\n"
    assert oracle_resp.run(stream, 1, 0) == oracle_resp.run(stream, 1, 4)
    before, _ = oracle_resp.run(stream, 1, 0)
    assert before == ["result: [False]", "result: [b'OK']"]
    oracle_resp.check(b"\x01\x01#\x00\r\n+#\x00+\r\n$'")


def test_resp3_map_keyed_by_an_aggregate_fails_the_connection() -> None:
    """hiredis raises TypeError building such a map; it escaped ``data_received``."""
    _, after = oracle_resp.run(b"%1\r\n*0\r\n+b\r\n", 0, 0)
    assert after == ["exception: 'ConnectionLost'"]
    oracle_resp.check(b"\x00\x11%2\r\n*1\r\n$1\r\n\x00a\n*-1\r\n")


def test_resp_garbage_aborts_the_connection() -> None:
    protocol = resp._Protocol(oracle_resp._LOOP, 1.0)  # a FakeLoop (support.py)
    transport = oracle_resp.FakeTransport()
    protocol.connection_made(transport)
    unit = resp._Unit(oracle_resp._LOOP.create_future(), b"PING", 1)
    protocol.send([unit])
    protocol.data_received(b"%1\r\n*0\r\n+b\r\n")
    state, error = retrieved(unit.future)
    assert (state, type(error), transport.aborted) == ("exception", resp.ConnectionLost, True)


# -- HTTP/1.1 -----------------------------------------------------------------------------


def test_interim_answer_to_head_is_not_the_answer() -> None:
    answer = b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n"
    assert oracle_http11.run(answer, True, 1024, 0).startswith("204 ")
    oracle_http11.check(b"\r\x05HTTP/1.1 100 Con\xff\xff\xff\xfftinue\r\n\r\nHTTP/1.1 204  CNottoTTenn\r\n\r\n\r\n\n")


def test_status_below_100_is_a_protocol_error() -> None:
    """llhttp parses any three digits; 099 then read a close-delimited body as the answer."""
    assert oracle_http11.run(b"HTTP/1.1 099 X\r\n\r\nbody", False, 1024, 0) == "failed: ProtocolError"
    oracle_http11.check(b"\x06\x05HTTP/1.1 099 Co\x00\x00\r\n\r\nH\x01\x00\x00\x001.1 204 No Content\r\n\r\n")


def test_close_after_an_interim_answer_is_a_closed_connection() -> None:
    """A 1xx that llhttp reads as close-delimited (an unknown Transfer-Encoding) ended, at the
    close, as the answer."""
    answer = b"HTTP/1.1 199 OK\r\nTransfer-Encoding: chu\r\n\r\n"
    assert oracle_http11.run(answer, False, 1024, 0) == "failed: ConnectionClosedError"
    oracle_http11.check(b"\x06\tHTTP/1.1 199 OK\r\nTransfer-Encoding: OK\r\nTransfer-Encoding: chu\r\n\r\n")


# -- envelope -----------------------------------------------------------------------------


def test_bad_utf8_is_invalid_envelope_on_protobufs_python_backend() -> None:
    """The pure twin caught only DecodeError; protobuf's pure-Python backend raises
    UnicodeDecodeError for a string field that is not UTF-8. Run where that backend is chosen."""
    message = (HERE / "corpus" / "envelope" / "finding-bad-utf8").read_bytes()[1:]
    code = (
        "import sys\n"
        "from edgeward.native import _envelope_py\n"
        "from edgeward.reasons import Rejection\n"
        "try:\n"
        "    _envelope_py.decode_request(sys.stdin.buffer.read(), 1024)\n"
        "except Rejection as exc:\n"
        "    print(exc.metadata['field'])\n"
    )
    env = {**os.environ, "PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION": "python"}
    result = subprocess.run(
        [sys.executable, "-c", code], input=message, capture_output=True, env=env, timeout=60, check=True
    )
    assert result.stdout.decode().strip() == "message"


def test_protobuf_backend_divergence_is_not_a_finding() -> None:
    """protobuf's pure-Python backend accepts a group left open at the end of the message; upb
    and the native codec refuse it. fuzz_envelope_wire's oracle asks the referee (upb) and passes."""
    code = "import sys\nfrom tests.fuzz import oracle_envelope\noracle_envelope.check(sys.stdin.buffer.read())\n"
    env = {**os.environ, "PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION": "python"}
    data = (HERE / "corpus" / "envelope" / "unterminated-group").read_bytes()
    subprocess.run([sys.executable, "-c", code], input=data, env=env, cwd=HERE.parents[1], timeout=60, check=True)


def test_email_key_may_end_in_a_dot_before_the_tag() -> None:
    """Not a bug, an oracle that asked too much (that the key be an accepted address): the tag
    of ``r.+x@r.g`` goes, and every tag and case of it counts under ``r.@r.g``."""
    from edgeward.public.checks import normalize_email
    from tests.fuzz import oracle_public

    assert normalize_email("R.+X@R.G") == normalize_email("r.+y@r.g") == "r.@r.g"
    oracle_public.check(b'\x00{"email":"r.+@r.g"}')


# -- gRPC-Web -----------------------------------------------------------------------------


def test_trailer_frame_cannot_carry_a_forged_status() -> None:
    """A CR/LF in a message or a metadata value went into the trailer block as it was: the
    message ``permission_denied\\r\\ngrpc-status: 0`` wrote a second ``grpc-status`` line, and a
    reader that keeps the last value of a name (tests/support/grpc_web_client.py does) saw OK.
    The message is now percent-encoded as gRPC's grpc-message is; a metadata name or text value
    that is not a header's is a ValueError, in ``status_headers`` and in ``trailer_frame``."""
    from edgeward.gateway import grpc_web_framing as framing
    from tests.fuzz import oracle_grpc_web

    headers = framing.status_headers(7, "permission_denied\r\ngrpc-status: 0")
    assert headers == [("grpc-status", "7"), ("grpc-message", "permission_denied%0D%0Agrpc-status: 0")]
    block = framing.trailer_frame(headers)
    assert [line.split(b":")[0] for line in block[5:].split(b"\r\n")] == [b"grpc-status", b"grpc-message", b""]
    assert oracle_grpc_web.parse_trailer_frame(block)[0] == ("grpc-status", "7")
    forged = [("edgeward-replayed", "1\r\ngrpc-status: 0"), ("x\r\ngrpc-status", "0"), ("grpc-status", "0")]
    for pair in forged:
        with pytest.raises(ValueError):
            framing.status_headers(7, "permission_denied", [pair])
    with pytest.raises(ValueError):
        framing.trailer_frame([("grpc-status", "7"), ("grpc-message", "x\ngrpc-status: 0")])
    oracle_grpc_web.check((HERE / "corpus" / "grpc_web" / "finding-trailer-injection").read_bytes())


def test_non_ascii_message_is_percent_encoded() -> None:
    """``trailer_frame`` encoded the block as ASCII: a message such as ``café`` raised
    UnicodeEncodeError, and the trailers-only path would have sent it as raw UTF-8 in a header.
    gRPC's percent-encoding of UTF-8 carries any text; the gateway's reason codes are unchanged."""
    from edgeward.gateway import grpc_web_framing as framing
    from tests.fuzz import oracle_grpc_web

    assert framing.status_headers(3, "café 100%")[1] == ("grpc-message", "caf%C3%A9 100%25")
    assert framing.status_headers(3, " x ")[1] == ("grpc-message", "%20x%20")  # a reader strips edge spaces
    assert framing.status_headers(4, "Deadline Exceeded")[1] == ("grpc-message", "Deadline Exceeded")
    assert framing.status_headers(3, "invalid_envelope")[1] == ("grpc-message", "invalid_envelope")
    with pytest.raises(ValueError):
        framing.status_headers(3, "\udc80")  # not UTF-8 text
    assert oracle_grpc_web.percent_decode("caf%C3%A9 100%25") == "café 100%"
    oracle_grpc_web.check((HERE / "corpus" / "grpc_web" / "finding-non-ascii-message").read_bytes())


@pytest.mark.parametrize("text", [b"AAAA=", b"AAAA==", b"AAAA====", b"AAAABAAB=", b"QQ==AAAA=QUJD", b"AAAA===QQ=="])
def test_text_body_padding_after_a_whole_quantum_is_refused(text: bytes) -> None:
    """CPython's ``a2b_base64(strict_mode=True)`` takes ``=`` after a whole quantum and ignores
    it, so ``decode_text`` accepted a body that is not whole quanta (``AAAABAAB=``), against its
    rule and docs/grpc-web.md. A chunk's length and its padding run are now checked first."""
    from edgeward.gateway import grpc_web_framing as framing
    from tests.fuzz import oracle_grpc_web

    assert oracle_grpc_web.reference_decode_text(text) is None
    with pytest.raises(framing.FramingError):
        framing.decode_text(text)
    assert framing.decode_text(b"QQ==AAAAQUI=") == b"A\x00\x00\x00AB"  # padded chunks still decode
    oracle_grpc_web.check(b"\x01" + text)
