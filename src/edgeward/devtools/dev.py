"""``edgeward dev``: a complete local stack in one terminal (what ``make run`` starts).

Starts a private ``redis-server`` on a free loopback port when one is installed (never the
machine's shared 6379; without it the gateway uses its embedded replay store), the stub
backend, and the gateway signing with a key kept in the state folder, whose public key is
written beside it for ``edgeward call``. The gateway's gRPC-Web listener is on (127.0.0.1:8082;
``EDGEWARD_GRPC_WEB_ADDR=`` empty turns it off), and browser pages from ``http://127.0.0.1:8090``,
where the browser example is served, may call it and the public auth listener (CORS), unless
``EDGEWARD_CORS_ORIGINS`` says otherwise. Ctrl-C (or SIGTERM) stops all of them; if one child
dies, the others are stopped too. Listener addresses follow the usual ``EDGEWARD_*`` variables.
The children log text lines rather than ``serve``'s JSON, unless ``EDGEWARD_LOG_FORMAT`` is set.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from edgeward.config import Address
from edgeward.devtools.ports import free_port, wait_listening
from edgeward.devtools.processes import stop_all
from edgeward.files import atomic_write
from edgeward.native.crypto import Signer
from edgeward.native.keys import load_signer, save_signer

__all__ = ("BROWSER_EXAMPLE_ORIGIN", "add_parser")

BROWSER_EXAMPLE_ORIGIN = "http://127.0.0.1:8090"


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("dev", help="run redis (if installed) + stub backend + gateway locally")
    parser.add_argument("--state-dir", default=".edgeward/dev", help="keys and redis files [.edgeward/dev]")
    parser.add_argument("--no-redis", action="store_true", help="use the embedded in-memory replay store")
    parser.set_defaults(func=_dev)


def _gateway_key(state: Path) -> Path:
    key = state / "gateway.key"
    signer = load_signer(key) if key.exists() else Signer.generate()
    if not key.exists():
        save_signer(signer, key)
    # Public, so readable by all; written like the key (edgeward.files), never through a planted link.
    atomic_write(state / "gateway.pub", (signer.public_key_b64 + "\n").encode(), mode=0o644)
    return key


def _start_redis(state: Path) -> tuple[subprocess.Popen[bytes], str]:
    exe = shutil.which("redis-server")
    assert exe is not None
    port = free_port()
    redis_dir = state / "redis"
    redis_dir.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(redis_dir), "--logfile", str(redis_dir / "redis.log")],
    )
    wait_listening(port, proc, what="redis-server")
    return proc, f"redis://127.0.0.1:{port}/0"


def _raise_interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def _dev(args: argparse.Namespace) -> int:
    state = Path(args.state_dir).resolve()  # redis-server changes directory before opening its log
    state.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env["EDGEWARD_SIGNING_KEY_FILE"] = str(_gateway_key(state))
    stub_http = Address.parse(env.setdefault("EDGEWARD_STUB_HTTP_ADDR", "127.0.0.1:8700"))
    stub_grpc = Address.parse(env.setdefault("EDGEWARD_STUB_GRPC_ADDR", "127.0.0.1:8701"))
    env.setdefault("EDGEWARD_BACKEND_BASE_URL", f"http://{stub_http}")
    env.setdefault("EDGEWARD_BACKEND_PUSH_ADDR", str(stub_grpc))
    grpc_addr = Address.parse(env.setdefault("EDGEWARD_GRPC_ADDR", "127.0.0.1:50051"))
    public_addr = Address.parse(env.setdefault("EDGEWARD_PUBLIC_HTTP_ADDR", "127.0.0.1:8080"))
    grpc_web = env.setdefault("EDGEWARD_GRPC_WEB_ADDR", "127.0.0.1:8082")
    grpc_web_addr = Address.parse(grpc_web) if grpc_web else None
    # The browser example (examples/web/) is served from this origin: its pages may call the gateway.
    env.setdefault("EDGEWARD_CORS_ORIGINS", BROWSER_EXAMPLE_ORIGIN)
    env.setdefault("EDGEWARD_WORKERS", "1")  # one gateway process to read logs from; set it to try worker mode
    env.setdefault("EDGEWARD_LOG_FORMAT", "text")  # a person reads these; json is for a log pipeline
    signal.signal(signal.SIGTERM, _raise_interrupt)
    children: list[subprocess.Popen[bytes]] = []
    try:
        if args.no_redis or env.get("EDGEWARD_REDIS_URL"):
            pass
        elif shutil.which("redis-server"):
            redis_proc, env["EDGEWARD_REDIS_URL"] = _start_redis(state)
            children.append(redis_proc)
        else:
            print("edgeward dev: redis-server not installed; using the in-memory replay store", file=sys.stderr)
        edgeward = [sys.executable, "-m", "edgeward"]
        children.append(subprocess.Popen([*edgeward, "stub-backend"], env=env))
        wait_listening(stub_http.port, children[-1], what="stub backend", host=stub_http.host)
        children.append(subprocess.Popen([*edgeward, "serve"], env=env))
        wait_listening(grpc_addr.port, children[-1], what="gateway", host=grpc_addr.host)
        if grpc_web_addr is not None:  # bound after the gRPC port
            wait_listening(grpc_web_addr.port, children[-1], what="gateway's gRPC-Web", host=grpc_web_addr.host)
        web_line = (
            f"gRPC-Web http://{grpc_web_addr} (CORS: {env['EDGEWARD_CORS_ORIGINS'] or 'none'}), "
            if grpc_web_addr is not None
            else ""
        )
        print(
            f"\nedgeward dev is up: gRPC {grpc_addr}, public auth http://{public_addr}, "
            f"{web_line}"
            f"stub backend http://{stub_http}, replay store {env.get('EDGEWARD_REDIS_URL', 'in-memory')}\n"
            f"try:  .venv/bin/edgeward call user.echo '{{\"hello\":\"world\"}}'\n"
            "Ctrl-C stops everything.\n",
            flush=True,
        )
        while all(proc.poll() is None for proc in children):
            time.sleep(0.2)
        print("edgeward dev: a component exited; stopping the others", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    except RuntimeError as exc:
        print(f"edgeward dev: {exc}", file=sys.stderr)
        return 1
    finally:
        stop_all(children)
