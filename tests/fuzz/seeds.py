"""Write the starting corpora: ``python tests/fuzz/seeds.py OUT_DIR`` fills ``OUT_DIR/<target>/``.

Each target gets the checked-in cases of its oracle (``tests/fuzz/corpus/<oracle>/``, a handful
of small files, the reproducers of past findings among them), and the envelope targets also every
signed request of the test vectors (``tests/vectors/signing.json``), encoded as both request kinds
under a 1 KiB payload limit. The gRPC-Web target gets those requests as request bodies: framed
(``unframe``), framed and base64-encoded (``decode_text``), and the text body cut in two padded
chunks. Existing files are kept: a corpus grown by earlier ``make fuzz`` runs goes on growing.
"""

from __future__ import annotations

import base64
import json
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
TARGETS = ("envelope", "envelope_wire", "public", "resp", "http11", "grpc_web")
# The oracle of each target, which names its checked-in corpus: the wire target is the envelope
# oracle on protobuf's pure-Python backend (fuzz_envelope_wire.py).
ORACLES = {target: target.removesuffix("_wire") for target in TARGETS}


def vector_requests() -> list[bytes]:
    """Envelope inputs (``oracle_envelope``): a control byte, 8 (execute) or 9 (subscribe), both
    with the 1 KiB limit, then each vector request's wire bytes."""
    from edgeward._pb import gateway_pb2

    vectors = json.loads((HERE.parents[0] / "vectors" / "signing.json").read_text())
    inputs = []
    for case in vectors["request"]:
        envelope = gateway_pb2.RequestEnvelope(**case["envelope"], payload_hash=bytes.fromhex(case["payload_hash_hex"]))
        for control, cls in ((8, gateway_pb2.ExecuteCommandRequest), (9, gateway_pb2.SubscribeEventsRequest)):
            message = cls(
                envelope=envelope,
                payload_bytes=bytes.fromhex(case["payload_bytes_hex"]),
                signature=bytes.fromhex(case["signature_hex"]),
            )
            inputs.append(bytes([control]) + message.SerializeToString())
    return inputs


def grpc_web_bodies() -> list[bytes]:
    """gRPC-Web inputs (``oracle_grpc_web``): each vector request's wire bytes as a binary body
    (mode 0), as a text body (mode 1), and as a text body of two padded chunks split after the
    frame header (mode 1)."""
    bodies = []
    for data in vector_requests()[::2]:  # the ExecuteCommand ones: the message is the same kind of bytes
        message = data[1:]
        framed = b"\x00" + len(message).to_bytes(4, "big") + message
        text = base64.b64encode(framed)
        chunked = base64.b64encode(framed[:5]) + base64.b64encode(framed[5:])
        bodies += [b"\x00" + framed, b"\x01" + text, b"\x01" + chunked]
    return bodies


def write(out: Path) -> None:
    for target in TARGETS:
        directory = out / target
        directory.mkdir(parents=True, exist_ok=True)
        for case in sorted((HERE / "corpus" / ORACLES[target]).iterdir()):
            shutil.copyfile(case, directory / case.name)
        if ORACLES[target] == "envelope":
            for number, data in enumerate(vector_requests()):
                (directory / f"vector-{number:02d}").write_bytes(data)
        if ORACLES[target] == "grpc_web":
            for number, data in enumerate(grpc_web_bodies()):
                (directory / f"vector-{number:02d}").write_bytes(data)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python tests/fuzz/seeds.py OUT_DIR")
    write(Path(sys.argv[1]))
