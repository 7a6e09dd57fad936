"""``edgeward healthcheck``: 0 only for a 200 answer; refused, 503, redirects and timeouts are 1."""

from __future__ import annotations

import http.server
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest

from edgeward.cli import main
from edgeward.devtools.healthcheck import check


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/slow":
            self.server.release.wait(10)  # type: ignore[attr-defined]
            return
        status = {"/ready": 200, "/draining": 503, "/moved": 302}.get(self.path, 404)
        self.send_response(status)
        if status == 302:
            self.send_header("Location", "/ready")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *_args: object) -> None:
        pass


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    server.release = threading.Event()  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.release.set()  # type: ignore[attr-defined]
    server.shutdown()
    server.server_close()
    thread.join(10)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _exit_code(*argv: str) -> object:
    with pytest.raises(SystemExit) as exc:
        main(["healthcheck", *argv])
    return exc.value.code


def test_ready_is_exit_0(base_url: str) -> None:
    assert check(f"{base_url}/ready", 2.0) is None
    assert _exit_code("--url", f"{base_url}/ready") == 0


@pytest.mark.parametrize(("path", "why"), [("/draining", "HTTP 503"), ("/moved", "HTTP 302"), ("/nope", "HTTP 404")])
def test_any_other_status_is_exit_1(base_url: str, path: str, why: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert check(f"{base_url}{path}", 2.0) == f"{base_url}{path}: {why}"
    assert _exit_code("--url", f"{base_url}{path}") == 1
    assert why in capsys.readouterr().err


def test_refused_and_timeout_are_exit_1(base_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert _exit_code("--url", f"http://127.0.0.1:{_closed_port()}/readyz") == 1
    assert "not ready" in capsys.readouterr().err
    problem = check(f"{base_url}/slow", 0.3)
    assert problem is not None and "timed out" in problem
    assert _exit_code("--url", f"{base_url}/slow", "--timeout", "0.3", "--quiet") == 1
    assert capsys.readouterr().err == ""


def test_the_url_comes_from_the_environment(base_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGEWARD_HEALTHCHECK_URL", f"{base_url}/ready")
    assert _exit_code() == 0
    monkeypatch.setenv("EDGEWARD_HEALTHCHECK_URL", f"{base_url}/draining")
    assert _exit_code() == 1


def test_not_an_http_url_is_exit_1() -> None:
    assert check("file:///etc/passwd", 1.0) == "not an http(s) URL: 'file:///etc/passwd'"
    assert _exit_code("--url", "file:///etc/passwd") == 1


def test_the_module_form_is_the_same_check_without_the_other_layers(base_url: str) -> None:
    """``python -m edgeward.devtools.healthcheck``: same exit codes, and grpc, aiohttp and the
    gateway are never imported (the cheap form docs/container.md describes)."""
    probe = (
        "import runpy, sys\n"
        "try:\n"
        "    runpy.run_module('edgeward.devtools.healthcheck', run_name='__main__')\n"
        "except SystemExit as exit:\n"
        "    heavy = ('grpc', 'aiohttp', 'edgeward.gateway', 'edgeward.native')\n"
        "    print(exit.code, [m for m in heavy if m in sys.modules])\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGEWARD_")}
    for path, expected in (("/ready", "0 []"), ("/draining", "1 []")):
        result = subprocess.run([sys.executable, "-c", probe, "--url", f"{base_url}{path}"], env=env,
                                capture_output=True, text=True, timeout=60, check=False)
        assert result.stdout.strip() == expected, result.stdout + result.stderr
