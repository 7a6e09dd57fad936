"""The pure envelope twin on protobuf's default (upb) backend, as a subprocess the wire-format
fuzzer consults: ``python -m tests.fuzz.referee`` answers pickled ``(message, max_payload, kind)``
requests, each framed by a 4-byte length, with the pickled ``oracle_envelope.outcome``.

``fuzz_envelope_wire.py`` runs the pure twin on protobuf's pure-Python backend, which coverage
can see but which disagrees with upb on some malformed input (docs/fuzzing.md); a disagreement
with the native twin there counts only when the pure twin on upb disagrees too.
"""

from __future__ import annotations

import os
import pickle
import struct
import subprocess
import sys
from pathlib import Path
from typing import IO, Any

_ROOT = Path(__file__).resolve().parents[2]
_LENGTH = struct.Struct("<I")


def _send(stream: IO[bytes], value: Any) -> None:
    data = pickle.dumps(value)
    stream.write(_LENGTH.pack(len(data)) + data)
    stream.flush()


def _receive(stream: IO[bytes]) -> Any:
    header = stream.read(_LENGTH.size)
    if len(header) < _LENGTH.size:
        raise EOFError
    return pickle.loads(stream.read(_LENGTH.unpack(header)[0]))


class Referee:
    """The subprocess, started on first use; ``outcome`` as the pure twin on upb decides it."""

    def __init__(self) -> None:
        self._process: subprocess.Popen[bytes] | None = None

    def outcome(self, message: bytes, max_payload: int, kind: str) -> tuple[object, ...]:
        if self._process is None:
            env = {k: v for k, v in os.environ.items() if k != "PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION"}
            self._process = subprocess.Popen(
                [sys.executable, "-m", "tests.fuzz.referee"],
                cwd=_ROOT,
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
            )
        assert self._process.stdin is not None and self._process.stdout is not None
        _send(self._process.stdin, (message, max_payload, kind))
        return tuple(_receive(self._process.stdout))


def _serve() -> None:
    from google.protobuf.internal import api_implementation

    from edgeward.native import _envelope_py
    from tests.fuzz.oracle_envelope import outcome

    assert api_implementation.Type() != "python", "the referee must run on protobuf's default backend"
    while True:
        try:
            message, max_payload, kind = _receive(sys.stdin.buffer)
        except EOFError:
            return
        _send(sys.stdout.buffer, outcome(_envelope_py, message, max_payload, kind))


if __name__ == "__main__":
    _serve()
