"""``edgeward healthcheck``: exit 0 when a readiness URL answers 200, 1 otherwise.

The container image has no curl (docs/container.md): its ``HEALTHCHECK`` runs this command
against the admin listener's ``/readyz``. It uses only the standard library and imports nothing
else of edgeward, so a check costs an interpreter start and one request with a short timeout. A
redirect is not followed and counts as not ready: a health URL that redirects is misconfigured.

``python -m edgeward.devtools.healthcheck`` is the same check with the same flags, without the
``edgeward`` command's start-up (which imports every layer: about 0.4 s of CPU against 0.05 s);
docs/container.md says when to prefer it.
"""

from __future__ import annotations

import argparse
import os
import sys
import urllib.error
import urllib.request

__all__ = ("DEFAULT_URL", "add_parser", "check", "main")

DEFAULT_URL = "http://127.0.0.1:9090/readyz"
_URL_ENV = "EDGEWARD_HEALTHCHECK_URL"


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *_args: object, **_kwargs: object) -> None:
        return None


# No proxy from the environment: a health check asks the local listener, never through a proxy.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirect())


def check(url: str, timeout: float) -> str | None:
    """None when ``url`` answers 200 within ``timeout`` seconds, else why not (one line)."""
    if not url.startswith(("http://", "https://")):
        return f"not an http(s) URL: {url!r}"
    try:
        with _OPENER.open(url, timeout=timeout) as resp:
            status = int(resp.status)
    except urllib.error.HTTPError as exc:
        status = exc.code
        exc.close()
    except (OSError, ValueError) as exc:  # refused, timed out, unresolvable, malformed
        return f"{url}: {exc}"
    return None if status == 200 else f"{url}: HTTP {status}"


def _positive(text: str) -> float:
    value = float(text)
    if not 0 < value <= 60:
        raise argparse.ArgumentTypeError("expected seconds in (0, 60]")
    return value


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    _configure(subparsers.add_parser("healthcheck", help=_HELP))


_HELP = "exit 0 if a readiness URL answers 200 (the container's HEALTHCHECK), else 1"


def _configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--url", default=os.environ.get(_URL_ENV) or DEFAULT_URL,
        help=f"URL to ask [{_URL_ENV}, default {DEFAULT_URL}]",
    )
    parser.add_argument("--timeout", type=_positive, default=2.0, help="seconds to wait for the answer [2]")
    parser.add_argument("--quiet", action="store_true", help="print nothing on failure")
    parser.set_defaults(func=_healthcheck)


def _healthcheck(args: argparse.Namespace) -> int:
    problem = check(args.url, args.timeout)
    if problem is None:
        return 0
    if not args.quiet:
        print(f"edgeward healthcheck: not ready: {problem}", file=sys.stderr)
    return 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edgeward.devtools.healthcheck", description=_HELP)
    _configure(parser)
    return _healthcheck(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
