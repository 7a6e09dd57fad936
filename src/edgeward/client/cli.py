"""Client commands of the ``edgeward`` CLI: ``keygen``, ``pubkey``, ``call`` and ``subscribe``.

``call`` and ``subscribe`` are what a developer runs against ``edgeward dev``: they keep a device
key and the device session they logged in with in a small state folder, log in through the public
auth routes (reading the code from the stub backend's mailbox) when there is no session or the
gateway says the session is unknown or revoked, and verify everything the gateway signs with its
public key. Nothing unverified is printed as a result.

``call`` signs one command, sends it and prints the verified answer. Exit status: 0 for ``ok``,
1 when the backend answered an error code, 3 when the gateway refused the call (its stable reason
on stderr), 2 for a usage or set-up problem. A call whose outcome is unknown is resent as the very
same signed request, ``--attempts`` calls in all (``EdgewardClient.execute``).

``subscribe`` opens a SubscribeEvents stream and prints each verified event as one JSON line
(``event_id``, ``event_type``, ``timestamp_ms``, ``trace_id``, ``payload``) as it arrives, the
``gateway.server_time`` event first, each line flushed whole. The ``event_id`` of the last line is
the stream's position: ``--resume-after`` it on the next run gets the events missed in between
(docs/push.md, "Resuming a stream"). It logs in again only when the stream is refused before its
first event; a stream that the gateway ends later (session_revoked, slow_consumer,
shutting_down) exits with status 3 and the reason on stderr. Exit status 0 after ``--count``
events, 130 on Ctrl-C, 2 for a usage or set-up problem.

Both wait for a gateway they cannot reach yet (gRPC wait for ready: ``call`` up to ``--timeout``
per attempt, ``subscribe`` until it can), as the SDK does (docs/workers.md); ``--fail-fast``
fails at once instead.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from edgeward.client.sdk import (
    AuthError,
    CommandResult,
    EdgewardClient,
    Event,
    GatewayError,
    VerificationError,
    login_with_stub_mailbox,
)
from edgeward.files import atomic_write
from edgeward.native.crypto import Signer, decode_public_key
from edgeward.native.keys import KeyFileError, load_signer, save_signer

__all__ = ("add_parsers",)

_DEFAULT_STATE_DIR = ".edgeward/client"
_DEV_GATEWAY_PUB = ".edgeward/dev/gateway.pub"
_RELOGIN_REASONS = frozenset({"session_not_found", "session_revoked"})


class _SetupError(Exception):
    """A problem the user fixes by changing a flag, a variable or a file (exit status 2)."""


def add_parsers(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    keygen = subparsers.add_parser("keygen", help="write a new Ed25519 key file (base64 seed, mode 0600)")
    keygen.add_argument("path", help="key file to create")
    keygen.add_argument("--force", action="store_true", help="overwrite an existing file")
    keygen.set_defaults(func=_keygen)

    pubkey = subparsers.add_parser("pubkey", help="print the base64 public key of a key file")
    pubkey.add_argument("path", help="key file")
    pubkey.set_defaults(func=_pubkey)

    call = subparsers.add_parser(
        "call", help="sign and send one command (logging in if needed), verify and print the answer"
    )
    call.add_argument("message_type", help="e.g. user.echo")
    call.add_argument("payload", nargs="?", default="{}", help="JSON payload [{}]")
    _device_options(call)
    call.add_argument("--trace-id", default="", help="trace id carried to the backend")
    call.add_argument("--timeout", type=float, default=10.0, help="seconds per call [10]")
    call.add_argument(
        "--attempts", type=int, default=3,
        help="calls in all when the outcome is unknown (timeout, lost connection): resent as the very same "
        "signed request, which the gateway runs at most once (docs/replay.md) [3]",
    )
    _fail_fast_option(call, "up to --timeout per attempt")
    call.set_defaults(func=_call)

    subscribe = subparsers.add_parser(
        "subscribe", help="open an event stream (logging in if needed); print verified events as JSON lines"
    )
    subscribe.add_argument("options", nargs="?", default=None, help="JSON object of subscription options [none]")
    _device_options(subscribe)
    subscribe.add_argument("--trace-id", default="", help="trace id of the subscription")
    subscribe.add_argument(
        "--count", type=int, default=0, help="exit after this many events, server_time included [0: never]"
    )
    subscribe.add_argument(
        "--resume-after", metavar="POSITION", default=None,
        help="the event_id of the last event an earlier run printed: the gateway first sends the events "
        "missed since, or a gateway.resume_gap event when it cannot (docs/push.md) [none]",
    )
    _fail_fast_option(subscribe, "as long as it takes")
    subscribe.set_defaults(func=_subscribe)


def _fail_fast_option(parser: argparse.ArgumentParser, wait: str) -> None:
    parser.add_argument(
        "--fail-fast", action="store_true",
        help=f"fail at once (UNAVAILABLE) when the gateway cannot be reached, instead of waiting for it {wait} "
        "(gRPC wait_for_ready, on by default: docs/workers.md)",
    )


def _device_options(parser: argparse.ArgumentParser) -> None:
    """Where the gateway is, how to log in, and where the device key and session are kept."""
    _env_option(parser, "--grpc-target", "EDGEWARD_GRPC_TARGET", "127.0.0.1:50051", "gateway gRPC address")
    _env_option(parser, "--public-url", "EDGEWARD_PUBLIC_URL", "http://127.0.0.1:8080", "public auth base URL")
    _env_option(
        parser, "--backend-url", "EDGEWARD_STUB_BACKEND_URL", "http://127.0.0.1:8700",
        "stub backend base URL (its mailbox holds the login code)",
    )
    _env_option(parser, "--state-dir", "EDGEWARD_CLIENT_STATE", _DEFAULT_STATE_DIR, "device key and session")
    _env_option(parser, "--email", "EDGEWARD_CLIENT_EMAIL", "dev@example.com", "e-mail to log in with")
    _env_option(
        parser, "--gateway-public-key", "EDGEWARD_GATEWAY_PUBLIC_KEY", None,
        f"gateway public key (base64) or a file holding it [default: {_DEV_GATEWAY_PUB}]",
    )


def _env_option(parser: argparse.ArgumentParser, flag: str, env: str, default: str | None, help: str) -> None:
    parser.add_argument(flag, default=os.environ.get(env) or default, help=f"{help} [{env}, default {default}]")


def _keygen(args: argparse.Namespace) -> int:
    path = Path(args.path)
    if path.exists() and not args.force:
        print(f"edgeward keygen: {path} exists (use --force to replace it)", file=sys.stderr)
        return 2
    signer = Signer.generate()
    save_signer(signer, path)
    print(signer.public_key_b64)
    return 0


def _pubkey(args: argparse.Namespace) -> int:
    try:
        print(load_signer(args.path).public_key_b64)
    except KeyFileError as exc:
        print(f"edgeward pubkey: {exc}", file=sys.stderr)
        return 2
    return 0


def _gateway_public_key(value: str | None) -> bytes:
    text = value or _DEV_GATEWAY_PUB
    path = Path(text)
    try:
        if path.is_file():
            return decode_public_key(path.read_text().strip())
        if value is None:
            raise _SetupError(
                f"no gateway public key: {_DEV_GATEWAY_PUB} does not exist (start `make run` first, "
                "or set EDGEWARD_GATEWAY_PUBLIC_KEY)"
            )
        return decode_public_key(text)
    except ValueError as exc:
        raise _SetupError(f"gateway public key {text!r}: {exc}") from exc


def _device_signer(state: Path, command: str) -> Signer:
    key = state / "device.key"
    try:
        return load_signer(key)
    except KeyFileError:
        if key.exists():
            raise
    signer = Signer.generate()
    save_signer(signer, key)
    print(f"edgeward {command}: new device key in {key}", file=sys.stderr)
    return signer


def _load_session(state: Path, email: str) -> str | None:
    try:
        saved = json.loads((state / "session.json").read_text())
    except (OSError, ValueError):
        return None
    if isinstance(saved, dict) and saved.get("email") == email and isinstance(saved.get("device_session_id"), str):
        return str(saved["device_session_id"])
    return None


def _save_session(state: Path, email: str, device_session_id: str) -> None:
    """Owner-only and atomic, like the device key beside it (``edgeward.files``)."""
    record = json.dumps({"email": email, "device_session_id": device_session_id}) + "\n"
    atomic_write(state / "session.json", record.encode(), mode=0o600)


async def _login(args: argparse.Namespace, state: Path, signer: Signer) -> str:
    dsid = await login_with_stub_mailbox(args.public_url, args.backend_url, args.email, signer)
    _save_session(state, args.email, dsid)
    print(f"edgeward {args.command}: logged in as {args.email}, device session {dsid}", file=sys.stderr)
    return dsid


async def _send(
    args: argparse.Namespace, payload: Any, gateway_key: bytes, state: Path, signer: Signer
) -> CommandResult:
    dsid = _load_session(state, args.email) or await _login(args, state, signer)
    async with EdgewardClient(args.grpc_target, gateway_key, signer, dsid) as client:
        try:
            return await client.execute(
                args.message_type, payload, trace_id=args.trace_id, timeout=args.timeout, attempts=args.attempts,
                wait_for_ready=not args.fail_fast,
            )
        except GatewayError as exc:
            if exc.reason not in _RELOGIN_REASONS:
                raise
        client.device_session_id = await _login(args, state, signer)
        return await client.execute(
            args.message_type, payload, trace_id=args.trace_id, timeout=args.timeout, attempts=args.attempts,
            wait_for_ready=not args.fail_fast,
        )


def _call(args: argparse.Namespace) -> int:
    try:
        payload = orjson.loads(args.payload)
    except orjson.JSONDecodeError as exc:
        print(f"edgeward call: the payload is not JSON: {exc}", file=sys.stderr)
        return 2

    async def send(gateway_key: bytes, state: Path, signer: Signer) -> int:
        result = await _send(args, payload, gateway_key, state, signer)
        try:
            body: Any = result.json()
        except orjson.JSONDecodeError:
            body = result.payload.decode(errors="replace")
        replayed = " (the first call's answer, kept by the gateway)" if result.replayed else ""
        print(
            f"verified response: result_code={result.result_code} request_id={result.request_id}{replayed}",
            file=sys.stderr,
        )
        print(orjson.dumps(body, option=orjson.OPT_INDENT_2).decode())
        return 0 if result.result_code == "ok" else 1

    return _run_device_command(args, send)


def _event_line(event: Event) -> str:
    try:
        payload: Any = event.json() if event.payload else None
    except orjson.JSONDecodeError:
        payload = event.payload.decode(errors="replace")
    line = {
        "event_id": event.event_id,
        "event_type": event.event_type,
        "timestamp_ms": event.timestamp_ms,
        "trace_id": event.trace_id,
        "payload": payload,
    }
    return orjson.dumps(line).decode()


async def _stream(args: argparse.Namespace, options: Any, gateway_key: bytes, state: Path, signer: Signer) -> int:
    dsid = _load_session(state, args.email) or await _login(args, state, signer)
    seen = 0
    async with EdgewardClient(args.grpc_target, gateway_key, signer, dsid) as client:
        for attempt in range(2):
            try:
                async with contextlib.aclosing(client.subscribe(
                    options, trace_id=args.trace_id, resume_after=args.resume_after, wait_for_ready=not args.fail_fast
                )) as events:
                    async for event in events:
                        seen += 1
                        print(_event_line(event), flush=True)
                        if seen == args.count:
                            return 0
            except GatewayError as exc:
                if seen:
                    print(f"edgeward subscribe: the gateway ended the stream: {exc.code.name} {exc.reason}",
                          file=sys.stderr)
                    return 3
                if attempt or exc.reason not in _RELOGIN_REASONS:
                    raise
                client.device_session_id = await _login(args, state, signer)
                continue
            break
    print("edgeward subscribe: the stream ended without a status", file=sys.stderr)
    return 3


def _subscribe(args: argparse.Namespace) -> int:
    try:
        options = None if args.options is None else orjson.loads(args.options)
    except orjson.JSONDecodeError as exc:
        print(f"edgeward subscribe: the options are not JSON: {exc}", file=sys.stderr)
        return 2
    if options is not None and not isinstance(options, dict):
        print("edgeward subscribe: the options must be a JSON object", file=sys.stderr)
        return 2
    if args.resume_after == "":
        print("edgeward subscribe: --resume-after needs an event_id (leave the flag out for a fresh stream)",
              file=sys.stderr)
        return 2

    async def stream(gateway_key: bytes, state: Path, signer: Signer) -> int:
        return await _stream(args, options, gateway_key, state, signer)

    try:
        return _run_device_command(args, stream)
    except KeyboardInterrupt:
        return 130


def _run_device_command(
    args: argparse.Namespace, action: Callable[[bytes, Path, Signer], Coroutine[Any, Any, int]]
) -> int:
    """Set up the device state, run ``action`` and turn the failures every device command shares into a status."""
    name = f"edgeward {args.command}"
    try:
        gateway_key = _gateway_public_key(args.gateway_public_key)
    except _SetupError as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        return 2
    state = Path(args.state_dir)
    try:
        state.mkdir(parents=True, exist_ok=True)
        signer = _device_signer(state, args.command)
        return asyncio.run(action(gateway_key, state, signer))
    except GatewayError as exc:
        detail = f" {exc.metadata}" if exc.metadata else ""
        print(f"{name}: refused by the gateway: {exc.code.name} {exc.reason}{detail}", file=sys.stderr)
        return 3
    except VerificationError as exc:
        print(f"{name}: the answer does not verify: {exc}", file=sys.stderr)
        return 3
    except AuthError as exc:
        print(f"{name}: login failed: {exc}", file=sys.stderr)
        return 2
    except aiohttp.ClientError as exc:  # before OSError: some are OSErrors
        print(f"{name}: cannot reach {args.public_url} or {args.backend_url}: {exc}", file=sys.stderr)
        return 2
    except (KeyFileError, OSError) as exc:
        print(f"{name}: device state in {state}: {exc}", file=sys.stderr)
        return 2
