"""A headless Chromium (Debian's ``chromium`` package) driven over the Chrome DevTools Protocol.

No browser-automation dependency: the DevTools Protocol is JSON over one websocket, spoken here
with aiohttp's client (already a dependency). Chromium starts with ``--remote-debugging-port=0``
and writes the port it chose to ``<user-data-dir>/DevToolsActivePort``; each page is a target
attached with ``flatten`` so every command goes over the browser's one connection with a
``sessionId``. Pages record console errors, uncaught exceptions and failed loads (CORS refusals
included) in ``Page.errors``; tests assert that list is empty.

Every wait is bounded; ``close()`` always ends the whole process group (Chromium's renderer, GPU and
zygote children included) and removes the profile.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import aiohttp

__all__ = ("Chromium", "JsError", "Page", "chromium_executable")

_START_TIMEOUT_S = 60.0  # generous: a loaded CI machine starts a browser slowly
_COMMAND_TIMEOUT_S = 30.0
_STOP_TIMEOUT_S = 10.0
_FLAGS = (
    "--headless=new",
    "--no-sandbox",  # tests may run as root, where Chromium's sandbox refuses to start
    "--disable-gpu",
    "--remote-debugging-port=0",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",  # nothing but the pages a test opens leaves the machine
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--password-store=basic",
    "--no-proxy-server",  # loopback only: a proxy from the environment must not see the test traffic
)


def chromium_executable() -> str:
    """Debian's ``chromium``; a RuntimeError telling to run ``make deps`` when it is not installed."""
    exe = shutil.which("chromium")
    if exe is None:
        raise RuntimeError("chromium is not installed: run `make deps` (apt-get install chromium)")
    return exe


class JsError(AssertionError):
    """An expression evaluated in a page threw (or its promise rejected)."""


class Page:
    """One tab: navigate, evaluate JavaScript (promises awaited), and the errors it logged."""

    def __init__(self, browser: Chromium, session_id: str, target_id: str) -> None:
        self._browser = browser
        self.session_id = session_id
        self.target_id = target_id
        self.errors: list[str] = []
        self.console: list[str] = []
        self._loaded: set[str] = set()  # loader ids whose load event fired
        self._load_waiters: dict[str, asyncio.Future[None]] = {}

    async def send(
        self, method: str, params: dict[str, Any] | None = None, timeout_s: float = _COMMAND_TIMEOUT_S
    ) -> Any:
        return await self._browser.send(method, params, session_id=self.session_id, timeout_s=timeout_s)

    async def navigate(self, url: str, timeout_s: float = _COMMAND_TIMEOUT_S) -> None:
        """Open ``url`` and return once its load event fired (its module scripts have run by then).

        The load awaited is this navigation's (its loader id), never a late one of the page before.
        """
        answer = await self.send("Page.navigate", {"url": url}, timeout_s)
        if answer.get("errorText"):
            raise AssertionError(f"navigating to {url} failed: {answer['errorText']}")
        loader_id = answer["loaderId"]
        if loader_id in self._loaded:
            return
        loaded = self._load_waiters[loader_id] = asyncio.get_running_loop().create_future()
        try:
            await asyncio.wait_for(loaded, timeout_s)
        except TimeoutError:
            raise AssertionError(f"{url} did not finish loading within {timeout_s:.0f}s") from None
        finally:
            self._load_waiters.pop(loader_id, None)

    async def evaluate(self, expression: str, timeout_s: float = _COMMAND_TIMEOUT_S) -> Any:
        """The JSON value of ``expression`` (a promise is awaited); JsError if it throws."""
        answer = await self.send(
            "Runtime.evaluate",
            {"expression": expression, "awaitPromise": True, "returnByValue": True},
            timeout_s,
        )
        details = answer.get("exceptionDetails")
        if details is not None:
            exception = details.get("exception") or {}
            raise JsError(f"{expression[:200]}\nthrew: {exception.get('description') or details.get('text')}")
        return answer["result"].get("value")

    async def call(self, function: str, *args: Any, timeout_s: float = _COMMAND_TIMEOUT_S) -> Any:
        """``function(*args)`` in the page, the arguments passed as JSON."""
        return await self.evaluate(f"{function}({', '.join(json.dumps(arg) for arg in args)})", timeout_s)

    def on_event(self, method: str, params: dict[str, Any]) -> None:
        if method == "Page.lifecycleEvent":
            if params.get("name") == "load":
                self._loaded.add(params["loaderId"])
                waiter = self._load_waiters.get(params["loaderId"])
                if waiter is not None and not waiter.done():
                    waiter.set_result(None)
        elif method == "Runtime.consoleAPICalled":
            text = " ".join(_remote_text(arg) for arg in params.get("args", ()))
            self.console.append(f"{params.get('type')}: {text}")
            if params.get("type") in ("error", "assert"):
                self.errors.append(f"console.{params.get('type')}: {text}")
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            exception = details.get("exception") or {}
            self.errors.append(f"uncaught: {exception.get('description') or details.get('text')}")
        elif method == "Log.entryAdded":
            entry = params.get("entry", {})
            if entry.get("level") == "error":
                self.errors.append(f"log ({entry.get('source')}): {entry.get('text')} {entry.get('url', '')}".rstrip())


def _remote_text(arg: dict[str, Any]) -> str:
    if "value" in arg:
        value = arg["value"]
        return value if isinstance(value, str) else json.dumps(value)
    return str(arg.get("description", arg.get("type", "?")))


class Chromium:
    """``async with Chromium() as browser: page = await browser.new_page(url)``."""

    def __init__(self) -> None:
        self.exe = chromium_executable()
        self.dir = Path(tempfile.mkdtemp(prefix="edgeward-chromium-"))
        self.profile = self.dir / "profile"
        self.log = self.dir / "chromium.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._http: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task[None] | None = None
        self._next_id = 0
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._pages: dict[str, Page] = {}

    async def __aenter__(self) -> Chromium:
        try:
            await self.start()
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    def output(self) -> str:
        """What Chromium wrote to stdout and stderr (for failure messages)."""
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    async def start(self) -> None:
        with self.log.open("wb") as out:
            self.proc = await asyncio.to_thread(
                subprocess.Popen,
                [self.exe, *_FLAGS, f"--user-data-dir={self.profile}", "about:blank"],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: close() ends every child with it
            )
        port, path = await self._devtools_address()
        self._http = aiohttp.ClientSession()
        self._ws = await asyncio.wait_for(
            self._http.ws_connect(f"ws://127.0.0.1:{port}{path}", max_msg_size=0), _COMMAND_TIMEOUT_S
        )
        self._reader = asyncio.create_task(self._read())

    async def _devtools_address(self) -> tuple[int, str]:
        """The port and browser path Chromium wrote to DevToolsActivePort (polled, bounded)."""
        assert self.proc is not None
        active = self.profile / "DevToolsActivePort"
        deadline = time.monotonic() + _START_TIMEOUT_S
        while True:
            if active.exists():
                lines = active.read_text().splitlines()
                if len(lines) >= 2 and lines[0].isdigit() and lines[1].startswith("/devtools/"):
                    return int(lines[0]), lines[1]
            if self.proc.poll() is not None:
                raise RuntimeError(f"chromium exited with status {self.proc.returncode}:\n{self.output()[-3000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"chromium wrote no DevToolsActivePort within {_START_TIMEOUT_S:.0f}s")
            await asyncio.sleep(0.05)

    async def _read(self) -> None:
        assert self._ws is not None
        try:
            async for message in self._ws:
                if message.type != aiohttp.WSMsgType.TEXT:
                    break
                data = json.loads(message.data)
                if "id" in data:
                    future = self._pending.pop(data["id"], None)
                    if future is not None and not future.done():
                        if "error" in data:
                            future.set_exception(RuntimeError(f"DevTools error: {data['error']}"))
                        else:
                            future.set_result(data.get("result", {}))
                else:
                    page = self._pages.get(data.get("sessionId", ""))
                    if page is not None:
                        page.on_event(data["method"], data.get("params", {}))
        finally:
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(ConnectionError("the DevTools connection to chromium closed"))
            self._pending.clear()

    async def send(
        self, method: str, params: dict[str, Any] | None = None, *, session_id: str | None = None,
        timeout_s: float = _COMMAND_TIMEOUT_S,
    ) -> Any:
        """One DevTools command; its result, or an error naming it (bounded by ``timeout_s``)."""
        if self._ws is None or self._reader is None or self._reader.done():
            raise ConnectionError("no DevTools connection to chromium")
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session_id is not None:
            message["sessionId"] = session_id
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[self._next_id] = future
        await self._ws.send_str(json.dumps(message))
        try:
            return await asyncio.wait_for(future, timeout_s)
        except TimeoutError:
            self._pending.pop(message["id"], None)
            raise AssertionError(f"DevTools {method} got no answer within {timeout_s:.0f}s") from None

    async def new_page(self, url: str) -> Page:
        """A new tab with ``url`` loaded, recording its console errors from the start."""
        target_id = (await self.send("Target.createTarget", {"url": "about:blank"}))["targetId"]
        session_id = (await self.send("Target.attachToTarget", {"targetId": target_id, "flatten": True}))["sessionId"]
        page = Page(self, session_id, target_id)
        self._pages[session_id] = page
        for domain in ("Page", "Runtime", "Log"):
            await page.send(f"{domain}.enable")
        await page.send("Page.setLifecycleEventsEnabled", {"enabled": True})
        await page.navigate(url)
        return page

    async def close(self) -> None:
        """Close the browser (politely first), end its process group, remove its profile."""
        if self._ws is not None and self._reader is not None and not self._reader.done():
            with contextlib.suppress(Exception):
                await self.send("Browser.close", timeout_s=5)
        if self._ws is not None:
            await self._ws.close()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        if self._http is not None:
            await self._http.close()
        if self.proc is not None:
            await asyncio.to_thread(_stop_group, self.proc)
        shutil.rmtree(self.dir, ignore_errors=True)


def _stop_group(proc: subprocess.Popen[bytes]) -> None:
    """Wait a little for the browser to exit, then kill whatever is left of its process group."""
    try:
        proc.wait(timeout=_STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=_STOP_TIMEOUT_S)
    with contextlib.suppress(ProcessLookupError):  # helpers that outlived the browser process
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=_STOP_TIMEOUT_S)
