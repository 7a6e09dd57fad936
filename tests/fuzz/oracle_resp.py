"""Oracle of the RESP reply reader: ``edgeward.io.resp._Protocol`` fed a server's bytes.

Input: a layout byte (how many commands are waiting and in how many units), a split byte (how
the socket cuts the stream, ``support.split``), then the bytes Redis sends. The protocol is
driven without a socket: units are written to a ``FakeTransport`` and the bytes delivered with
``data_received``, then the connection ends. Findings:

- any exception out of the protocol (garbage must fail the pending commands with ``ConnectionLost``);
- a command still waiting after the connection ended (a caller would hang until its deadline);
- a unit answered with the wrong number of replies, or failed with anything but ``ConnectionLost``;
- a different outcome when the same bytes arrive in other chunks (replies matched to the wrong
  command, or a reply lost, depend on where reads end).
"""

from __future__ import annotations

import hiredis

from edgeward.io import resp
from tests.fuzz.support import FakeLoop, FakeTransport, retrieved, split

_LOOP = FakeLoop()
_PING = hiredis.pack_command(("PING",))


def _counts(layout: int) -> list[int]:
    """1 to 4 units (each a ``send`` or ``pipeline`` call) of 1 to 4 commands each."""
    units = 1 + (layout & 3)
    return [1 + ((layout >> (2 + 2 * i)) & 3) for i in range(units)]


def run(stream: bytes, layout: int, split_seed: int) -> tuple[list[str], list[str]]:
    """Each unit's outcome (as text, so NaN and error replies compare) before and after the end."""
    protocol = resp._Protocol(_LOOP, 1.0)  # a FakeLoop (support.py)
    transport = FakeTransport()
    protocol.connection_made(transport)
    units = [resp._Unit(_LOOP.create_future(), _PING * count, count) for count in _counts(layout)]
    protocol.send(units)
    for chunk in split(stream, split_seed):
        if transport.is_closing():
            break
        protocol.data_received(chunk)
    before = [_describe(unit) for unit in units]
    protocol.connection_lost(None)
    return before, [_describe(unit) for unit in units]


def _describe(unit: resp._Unit) -> str:
    state, value = retrieved(unit.future)
    if state == "result":
        assert len(value) == unit.count, (unit.count, value)
    elif state == "exception":
        assert isinstance(value, resp.ConnectionLost), repr(value)
        value = type(value).__name__
    return f"{state}: {value!r}"


def check(data: bytes) -> None:
    """Raise AssertionError on a finding; a protocol exception goes out as it is."""
    if len(data) < 2:
        return
    layout, split_seed, stream = data[0], data[1], data[2:]
    whole = run(stream, layout, 0)
    assert all(not outcome.startswith("pending") for outcome in whole[1]), whole
    if split_seed:
        chunked = run(stream, layout, split_seed)
        assert chunked == whole, f"chunking changes the outcome of {stream!r}:\n whole: {whole}\n split: {chunked}"
