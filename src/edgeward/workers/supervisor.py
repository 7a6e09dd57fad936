"""The supervisor of ``edgeward serve --workers N`` (docs/workers.md).

It owns the host's admin listener and N worker processes (``edgeward.workers.worker``), and
never initialises gRPC itself, so starting a worker is a plain fork and exec:

- start: every worker must report serving (private /readyz 200) within ``START_TIMEOUT_S``; a
  worker that exits first ends the supervisor with that worker's status (4: a port in use).
- a worker that dies is replaced at once; more than ``RESTART_LIMIT`` replacements within
  ``RESTART_WINDOW_S`` stop everything with status 1 (something is wrong that restarting will
  not fix, and a supervisor of crash-looping workers would report a healthy host).
- SIGTERM or SIGINT: forwarded to every worker (each drains as ``edgeward serve`` does); the
  supervisor exits 0 when every worker exited 0.
- SIGHUP: a rolling restart, one worker at a time: the new worker serves before the old one
  retires (SIGUSR1), so the host never has fewer than N serving workers.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import dataclasses
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Coroutine
from typing import Any

import aiohttp
import orjson

from edgeward.gateway.settings import GatewaySettings
from edgeward.native.crypto import Signer
from edgeward.workers.admin import AdminServer

__all__ = ("RESTART_LIMIT", "RESTART_WINDOW_S", "START_TIMEOUT_S", "Supervisor", "Worker")

log = logging.getLogger(__name__)

START_TIMEOUT_S = 60.0  # a worker imports, binds and connects to Redis well within this
RESTART_LIMIT = 5
RESTART_WINDOW_S = 60.0
_STOP_MARGIN_S = 30.0  # beyond the shutdown grace, before a worker that does not exit is killed
_POLL_S = 0.05


@dataclasses.dataclass(eq=False)
class Worker:
    """One worker process; ``state`` is starting, serving or retiring.

    ``index`` is its slot, 0 to N-1: a replacement takes the slot of the worker it replaces, so
    the ``worker.index`` of its log lines (docs/logging.md) names the same slot across restarts.
    """

    proc: subprocess.Popen[bytes]
    index: int
    lifeline_fd: int
    replace_on_exit: bool
    state: str = "starting"
    admin_port: int = 0
    reported: asyncio.Future[int] = dataclasses.field(default_factory=asyncio.Future)
    exited: asyncio.Future[int] = dataclasses.field(default_factory=asyncio.Future)

    @property
    def pid(self) -> int:
        return self.proc.pid


class Supervisor:
    """Runs ``count`` workers with the same command-line settings ``flags`` until told to stop."""

    def __init__(self, settings: GatewaySettings, count: int, flags: list[str]) -> None:
        self.settings = settings
        self.count = count
        self.flags = flags
        self.workers: list[Worker] = []
        self.restarts = 0
        self.stopping = False
        self._recent_restarts: collections.deque[float] = collections.deque()
        self._done: asyncio.Future[int] | None = None
        self._rolling: asyncio.Task[Any] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        # Without a key file every worker signs with the supervisor's ephemeral key (see worker.py).
        self._seed = b"" if settings.signing_key_file else base64.b64encode(Signer.generate().seed)
        self.http: aiohttp.ClientSession | None = None

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        self._done = loop.create_future()
        if self._seed:
            log.warning("EDGEWARD_SIGNING_KEY_FILE is not set: the workers sign with an ephemeral key")
        self.http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        admin = AdminServer(self, self.settings)
        try:
            await admin.start()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self._finish, 0)
            loop.add_signal_handler(signal.SIGHUP, self._roll)
            start = self._background(self._start_all())
            await asyncio.wait([start, self._done], return_when=asyncio.FIRST_COMPLETED)
            if not self._done.done():  # started, or failed to; a signal during the start stops it too
                if start.result() == 0:
                    log.info("supervisor %d: %d workers serving", os.getpid(), self.count)
                else:
                    self._finish(start.result())
            return await self._stop_all(await self._done)
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)
            await admin.stop()
            await self.http.close()

    async def _start_all(self) -> int:
        first = [self._spawn(index, replace_on_exit=False) for index in range(self.count)]
        for worker in first:
            if not await self._until_serving(worker):
                code = await self._ended(worker)
                log.error("worker %d did not start (status %d); stopping", worker.pid, code)
                return code or 1
        for worker in first:
            worker.replace_on_exit = True
        return 0

    def _finish(self, status: int) -> None:
        assert self._done is not None
        if not self._done.done():
            self._done.set_result(status)

    def _spawn(self, index: int, *, replace_on_exit: bool) -> Worker:
        loop = asyncio.get_running_loop()
        report_r, report_w = os.pipe()
        lifeline_r, lifeline_w = os.pipe()
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", "edgeward", "serve", *self.flags,
                 "--worker-pipes", f"{report_w},{lifeline_r},{index}"],
                pass_fds=(report_w, lifeline_r),
            )
        finally:
            os.close(report_w)
            os.close(lifeline_r)
        os.write(lifeline_w, self._seed + b"\n")
        worker = Worker(proc, index, lifeline_w, replace_on_exit)
        self.workers.append(worker)
        pidfd = os.pidfd_open(proc.pid)
        loop.add_reader(pidfd, self._on_exit, worker, pidfd)
        report = bytearray()
        loop.add_reader(report_r, self._on_report, worker, report_r, report)
        log.info("worker %d started", proc.pid)
        return worker

    def _on_report(self, worker: Worker, fd: int, buffer: bytearray) -> None:
        chunk = os.read(fd, 4096)
        buffer += chunk
        if chunk:
            return
        asyncio.get_running_loop().remove_reader(fd)
        os.close(fd)
        if worker.reported.done():
            return
        try:
            worker.admin_port = int(orjson.loads(bytes(buffer))["admin_port"])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            worker.reported.set_exception(RuntimeError(f"worker {worker.pid} ended before serving"))
            worker.reported.exception()  # retrieved: _until_serving reads it, or nobody needs it
            return
        worker.reported.set_result(worker.admin_port)

    def _on_exit(self, worker: Worker, pidfd: int) -> None:
        asyncio.get_running_loop().remove_reader(pidfd)
        os.close(pidfd)
        os.close(worker.lifeline_fd)
        code = worker.proc.wait()
        worker.exited.set_result(code)
        self.workers.remove(worker)
        if self.stopping or worker.state == "retiring" or not worker.replace_on_exit:
            log.info("worker %d exited with status %d", worker.pid, code)
            return
        log.error("worker %d died (status %d); replacing it", worker.pid, code)
        now = time.monotonic()
        self._recent_restarts.append(now)
        while self._recent_restarts and self._recent_restarts[0] < now - RESTART_WINDOW_S:
            self._recent_restarts.popleft()
        if len(self._recent_restarts) > RESTART_LIMIT:
            log.error("more than %d worker restarts within %.0f s: stopping", RESTART_LIMIT, RESTART_WINDOW_S)
            self._finish(1)
            return
        self.restarts += 1
        self._background(self._replace(worker.index))

    def _background(self, coro: Coroutine[Any, Any, object]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _replace(self, index: int) -> None:
        worker = self._spawn(index, replace_on_exit=True)
        if not await self._until_serving(worker):
            log.error("worker %d did not become ready", worker.pid)
            await self._ended(worker)  # its exit replaces it, within the restart-rate limit

    async def _ended(self, worker: Worker) -> int:
        """Its exit status, after terminating it if it still runs."""
        if not worker.exited.done():
            worker.proc.terminate()
        return await asyncio.shield(worker.exited)

    async def _until_serving(self, worker: Worker) -> bool:
        """Wait until ``worker`` reported its admin port and its /readyz answers 200; False if it exited first."""
        deadline = time.monotonic() + START_TIMEOUT_S
        try:
            await asyncio.wait_for(asyncio.shield(worker.reported), START_TIMEOUT_S)
        except (RuntimeError, TimeoutError):
            return False
        while not worker.exited.done() and time.monotonic() < deadline:
            if await self.worker_ready(worker) is not None and worker.state != "retiring":
                worker.state = "serving"
                return True
            await asyncio.sleep(_POLL_S)
        return False

    async def worker_ready(self, worker: Worker) -> dict[str, object] | None:
        """The worker's /readyz body when it answers 200, else None."""
        body = await self.worker_get(worker, "/readyz")
        return orjson.loads(body) if body is not None else None

    async def worker_get(self, worker: Worker, path: str) -> bytes | None:
        """GET ``path`` on the worker's private admin port: the body of a 200, else None."""
        if not worker.admin_port or self.http is None:
            return None
        try:
            async with self.http.get(f"http://127.0.0.1:{worker.admin_port}{path}") as resp:
                return await resp.read() if resp.status == 200 else None
        except (aiohttp.ClientError, TimeoutError):
            return None

    def _roll(self) -> None:
        if self.stopping or (self._rolling is not None and not self._rolling.done()):
            log.warning("SIGHUP ignored: %s", "stopping" if self.stopping else "a rolling restart is under way")
            return
        self._rolling = self._background(self._rolling_restart())

    async def _rolling_restart(self) -> None:
        old = [w for w in self.workers if w.state == "serving"]
        log.info("rolling restart of %d workers", len(old))
        for worker in old:
            if self.stopping:
                return
            if worker.exited.done():
                continue  # died meanwhile: already replaced
            worker.replace_on_exit = False  # should it die now, the new worker is its replacement
            new = self._spawn(worker.index, replace_on_exit=False)
            if not await self._until_serving(new):
                log.error("rolling restart stopped: worker %d did not become ready", new.pid)
                await self._ended(new)
                worker.replace_on_exit = True
                if worker.exited.done() and not self.stopping:
                    self._background(self._replace(worker.index))
                return
            new.replace_on_exit = True
            if worker.exited.done():
                continue
            worker.state = "retiring"
            worker.proc.send_signal(signal.SIGUSR1)
            await asyncio.shield(worker.exited)
        log.info("rolling restart done")

    async def _stop_all(self, status: int) -> int:
        self.stopping = True
        for task in list(self._tasks):
            task.cancel()
        workers = list(self.workers)
        for worker in workers:
            worker.proc.send_signal(signal.SIGTERM)
        limit = self.settings.shutdown_grace_ms / 1000 + _STOP_MARGIN_S
        if workers:
            await asyncio.wait([w.exited for w in workers], timeout=limit)
        stuck = [w for w in workers if not w.exited.done()]
        for worker in stuck:
            log.error("worker %d did not stop within %.0f s: killing it", worker.pid, limit)
            worker.proc.kill()
        if stuck:
            await asyncio.wait([w.exited for w in stuck])
            status = status or 1
        failed = [w.pid for w in workers if w.exited.result() != 0]
        if failed:
            log.error("workers %s exited with an error", failed)
            status = status or 1
        log.info("supervisor stopped")
        return status
