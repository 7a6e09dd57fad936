"""One gateway run as a worker of a supervisor (docs/workers.md).

The supervisor starts it as ``edgeward serve --worker-pipes REPORT,LIFELINE,INDEX`` (a fresh
interpreter, never a fork: gRPC and fork do not mix; INDEX is its slot, which its log lines
carry) and talks to it through two pipes:

- report (worker -> supervisor): one JSON line, ``{"admin_port": N}``, once the gateway serves;
  the supervisor polls that private admin port's /readyz and scrapes its /metrics.
- lifeline (supervisor -> worker): a first line carrying the base64 seed of the supervisor's
  ephemeral signing key (empty when EDGEWARD_SIGNING_KEY_FILE is set), so every worker signs with
  the same key; then nothing until end of file, which means the supervisor is gone: the worker
  stops as on SIGTERM instead of serving on as an orphan.

Signals: SIGTERM or SIGINT stop the gateway as ``edgeward serve`` does (docs/push.md);
SIGUSR1 retires it for a rolling restart (``Gateway.stop(rolling=True)``: the listeners close and
connections get GOAWAY, calls still arriving are served). SIGHUP is ignored: a terminal hangup
reaches every process of the group, and only the supervisor acts on it.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import signal

import orjson

from edgeward.gateway.server import Gateway
from edgeward.gateway.settings import GatewaySettings
from edgeward.native.crypto import Signer
from edgeward.runtime import raise_fd_limit

__all__ = ("read_seed_line", "run_worker")

log = logging.getLogger(__name__)
_MAX_SEED_LINE = 128


def read_seed_line(fd: int) -> bytes:
    """The lifeline's first line (blocking; the supervisor writes it right after the spawn)."""
    line = b""
    while not line.endswith(b"\n") and len(line) < _MAX_SEED_LINE:
        chunk = os.read(fd, 1)
        if not chunk:
            break
        line += chunk
    return line.strip()


async def run_worker(settings: GatewaySettings, report_fd: int, lifeline_fd: int) -> None:
    """Serve until SIGTERM/SIGINT (drain), SIGUSR1 (retire) or the supervisor's end; then stop."""
    log.info("file descriptor limit: %d", raise_fd_limit())
    seed = read_seed_line(lifeline_fd)
    gateway = Gateway(settings, Signer(base64.b64decode(seed)) if seed else None, reuse_port=True)
    loop = asyncio.get_running_loop()
    rolling: asyncio.Future[bool] = loop.create_future()

    def stop(retire: bool) -> None:
        if not rolling.done():
            rolling.set_result(retire)

    def lifeline() -> None:
        if not os.read(lifeline_fd, 4096):
            log.warning("worker %d: the supervisor is gone; stopping", os.getpid())
            loop.remove_reader(lifeline_fd)
            stop(False)

    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop, False)
    loop.add_signal_handler(signal.SIGUSR1, stop, True)
    loop.add_reader(lifeline_fd, lifeline)
    try:
        await gateway.start()
        os.write(report_fd, orjson.dumps({"admin_port": gateway.admin_http_port}) + b"\n")
        os.close(report_fd)
        log.info("worker %d serving (private admin port %d)", os.getpid(), gateway.admin_http_port)
        retire = await rolling
    finally:
        loop.remove_reader(lifeline_fd)
    log.info("worker %d %s: grace %d ms", os.getpid(), "retiring" if retire else "stopping", settings.shutdown_grace_ms)
    await gateway.stop(rolling=retire)
    log.info("gateway stopped")
