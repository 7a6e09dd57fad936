"""Oracle of the HTTP/1.1 answer parser: ``edgeward.io.http11._Connection`` fed a server's bytes.

Input: a control byte (bit 0: the request was HEAD; bits 1-3: the client's body limit), a split
byte (how the socket cuts the stream, ``support.split``), then the server's answer. One request
is written to a ``FakeTransport``, the bytes delivered with ``data_received`` until the client
drops the connection, then the connection ends. Findings:

- any exception out of the protocol;
- the request still unsettled after the connection ended (a caller would wait for its deadline);
- a failure that is not an ``HTTPClientError`` (the documented errors), a body over the limit,
  a body on an answer to HEAD, or a status below 200 (interim, or not HTTP) taken for the answer;
- a different outcome when the same bytes arrive in other chunks: another answer, or an answer
  in place of a failure. Which failure an answer with several faults gets may depend on where
  reads end (llhttp reports a header only once it sees what follows it), so failures compare as
  one outcome.
"""

from __future__ import annotations

from edgeward.io import http11
from tests.fuzz.support import FakeLoop, FakeTransport, retrieved, split

_LIMITS = (0, 1, 16, 1024, 1 << 20, 0, 1, 16)
_REQUEST = b"GET / HTTP/1.1\r\nHost: backend\r\n\r\n"


class _Pool:
    """What a connection asks of its pool: the loop, and to be told when the socket is gone."""

    def __init__(self) -> None:
        self.loop = FakeLoop()

    def connection_lost(self, conn: object) -> None:
        pass


def run(answer: bytes, head_only: bool, limit: int, split_seed: int) -> str:
    """The request's outcome after the bytes and the end of the connection, as text."""
    conn = http11._Connection(_Pool())  # the part of _Pool a connection uses
    transport = FakeTransport()
    conn.connection_made(transport)
    waiter = conn.send(_REQUEST, head_only, limit, deadline=1.0)
    for chunk in split(answer, split_seed):
        if transport.is_closing():
            break
        conn.data_received(chunk)
    conn.connection_lost(None)
    state, value = retrieved(waiter)
    assert state != "pending", "the request is unsettled after the connection ended"
    if state == "exception":
        assert isinstance(value, http11.HTTPClientError), repr(value)
        return f"failed: {type(value).__name__}"
    assert 200 <= value.status <= 999, f"status {value.status} taken for the answer"
    assert len(value.body) <= limit, (len(value.body), limit)
    assert not (head_only and value.body), value.body
    return f"{value.status} {value.headers!r} {value.body!r} keep_alive={conn.keep_alive}"


def check(data: bytes) -> None:
    """Raise AssertionError on a finding; a protocol exception goes out as it is."""
    if len(data) < 2:
        return
    head_only, limit = bool(data[0] & 1), _LIMITS[(data[0] >> 1) & 7]
    split_seed, answer = data[1], data[2:]
    whole = run(answer, head_only, limit, 0)
    if split_seed:
        chunked = run(answer, head_only, limit, split_seed)
        same = chunked == whole or (chunked.startswith("failed") and whole.startswith("failed"))
        assert same, f"chunking changes the outcome of {answer!r}:\n whole: {whole}\n split: {chunked}"
