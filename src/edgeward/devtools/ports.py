"""Loopback ports of a local stack: pick a free one, and wait until a started process listens.

One notion of "up" for ``edgeward dev``, the benchmarks' stacks and the tests: a TCP connect to
the port succeeds while the processes that should be serving are still alive. A process that
exits while it is awaited fails the wait at once, with its exit status, instead of at the deadline.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
from typing import Any

__all__ = ("NotListening", "free_port", "free_ports", "is_listening", "wait_listening")

_WILDCARDS = ("", "0.0.0.0", "::")


class NotListening(RuntimeError):
    """The awaited port did not accept a connection in time, or a process it depends on exited."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago. For several at once, ``free_ports``."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_ports(*names: str) -> dict[str, int]:
    """Distinct TCP ports on 127.0.0.1, one per name, each free a moment ago.

    All are bound before any is released: ports picked one after another may repeat (the kernel
    may hand a port just released out again), and a process given the same port for two
    listeners then fails to start ("address already in use").
    """
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in names]
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return {name: int(sock.getsockname()[1]) for name, sock in zip(names, sockets, strict=True)}


def is_listening(port: int, host: str = "127.0.0.1") -> bool:
    """Whether something accepts TCP connections on ``host:port`` now (a wildcard host: on loopback)."""
    try:
        socket.create_connection(("127.0.0.1" if host in _WILDCARDS else host, port), timeout=0.5).close()
    except OSError:
        return False
    return True


def wait_listening(
    port: int,
    *processes: subprocess.Popen[Any],
    what: str,
    host: str = "127.0.0.1",
    timeout_s: float = 30.0,
) -> None:
    """Return once ``host:port`` accepts connections; ``NotListening`` when one of ``processes``
    exited first or ``timeout_s`` passed. ``what`` names the listener in the error."""
    deadline = time.monotonic() + timeout_s
    while not is_listening(port, host):
        for proc in processes:
            if proc.poll() is not None:
                raise NotListening(f"{what} exited with status {proc.returncode} before listening on port {port}")
        if time.monotonic() >= deadline:
            raise NotListening(f"{what} did not listen on {host}:{port} within {timeout_s:.0f}s")
        time.sleep(0.05)
