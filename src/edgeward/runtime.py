"""Process-level plumbing shared by the CLI commands: the event loop, logging, descriptors, listen errors.

Logging (docs/logging.md) is configured here only: one JSON object per line (``json``, what a log
pipeline parses) or a line of text (``text``, what a person reads in ``edgeward dev``), both
carrying a record's ``extra`` fields. ``AccessLog`` is the access log's writer, shared by the gRPC
service and the public listener, which sit in different layers.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import resource
import sys
import time
from collections.abc import Coroutine, Mapping
from functools import partial
from typing import Any, TypeVar

import orjson
import uvloop

__all__ = (
    "ACCESS_LOGGER",
    "EXIT_CANNOT_LISTEN",
    "AccessLog",
    "JsonFormatter",
    "ListenError",
    "TextFormatter",
    "configure_logging",
    "parse_log_format",
    "raise_fd_limit",
    "run",
    "shield_task",
)

T = TypeVar("T")

# Exit status of a server command whose listener could not bind (2 is a bad setting).
EXIT_CANNOT_LISTEN = 4
# An unlimited hard limit is not a number a soft limit can take: stop at this many descriptors.
_FD_CEILING = 1_048_576


class ListenError(OSError):
    """A listener could not bind; ``str()`` is the one line an operator needs."""

    def __init__(self, listener: str, address: str, cause: BaseException) -> None:
        why = os.strerror(cause.errno).lower() if isinstance(cause, OSError) and cause.errno else str(cause)
        super().__init__(f"cannot listen for {listener} on {address}: {why}")
        self.listener = listener
        self.address = address


def raise_fd_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit (a server holds a descriptor per client); the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = _FD_CEILING if hard == resource.RLIM_INFINITY else hard
    if soft == resource.RLIM_INFINITY or soft >= target:
        return soft if soft != resource.RLIM_INFINITY else _FD_CEILING
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError):
        return soft
    return target


def run(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` on a uvloop event loop (the production loop; asyncio's is the reference)."""
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)


def shield_task(work: asyncio.Task[T]) -> asyncio.Future[T]:
    """A future with ``work``'s outcome; cancelling it (its awaiter was cancelled) leaves ``work`` running.

    ``asyncio.shield`` for a task, on the command path: one callback instead of shield's two
    closures and its second callback, which costs a loop turn of its own when the task ends
    (4.8 against 7.1 µs per call in a microbenchmark; ``python -m bench.replay_keep``). Who cancels
    the future owns ``work`` from then on, its exception included.
    """
    answer: asyncio.Future[T] = work.get_loop().create_future()
    work.add_done_callback(partial(_relay, answer))
    return answer


def _relay(answer: asyncio.Future[T], work: asyncio.Task[T]) -> None:
    if answer.done():  # cancelled: the work goes on for whoever took it over
        return
    if work.cancelled():
        answer.cancel()
        return
    error = work.exception()
    if error is None:
        answer.set_result(work.result())
    else:
        answer.set_exception(error)


ACCESS_LOGGER = "edgeward.access"
# The attributes every LogRecord has: anything else on a record came from ``extra=``.
_RECORD_FIELDS = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}


def _extra(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in record.__dict__.items() if k not in _RECORD_FIELDS}


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time (RFC 3339, UTC, ms), level, logger, message, worker, exc, extras.

    ``worker`` is ``{"pid": ...}``, with ``"index"`` in a worker process of ``edgeward serve
    --workers N`` (the slot it fills, 0 to N-1). Extras never replace these fields.
    """

    def __init__(self, worker_index: int | None = None) -> None:
        super().__init__()
        self._worker_index = worker_index
        self._second = -1
        self._second_text = ""

    def _time(self, record: logging.LogRecord) -> str:
        second = int(record.created)
        if second != self._second:  # one strftime per second of logging, not per line
            self._second_text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = second
        return f"{self._second_text}.{int(record.msecs):03d}Z"

    def format(self, record: logging.LogRecord) -> str:
        worker: dict[str, int] = {"pid": record.process or os.getpid()}
        if self._worker_index is not None:
            worker["index"] = self._worker_index
        line: dict[str, Any] = {
            "time": self._time(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "worker": worker,
        }
        for key, value in record.__dict__.items():
            if key not in _RECORD_FIELDS and key not in line:
                line[key] = value
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        try:
            return orjson.dumps(line, default=str).decode()
        except TypeError:  # an extra orjson cannot take even through str() (an int over 64 bits)
            plain = {k: v if isinstance(v, str) or k == "worker" else str(v) for k, v in line.items()}
            return orjson.dumps(plain).decode()


class TextFormatter(logging.Formatter):
    """The classic text line, followed by the record's extras as ``key=value``."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        extra = _extra(record)
        if not extra:
            return text
        fields = " ".join(f"{k}={v}" for k, v in extra.items() if v is not None and v != "")
        head, sep, rest = text.partition("\n")  # a traceback stays below the fields
        return f"{head} {fields}{sep}{rest}"


def parse_log_format(text: str) -> str:
    """The ``EDGEWARD_LOG_FORMAT`` setting: json or text."""
    value = text.strip().lower()
    if value not in ("json", "text"):
        raise ValueError("expected json or text")
    return value


def configure_logging(level: str = "INFO", fmt: str = "json", worker_index: int | None = None) -> None:
    """Send every record to stderr at ``level`` and above, as ``fmt`` (json or text) lines.

    Replaces any handler configured before: one handler, whoever called ``basicConfig`` first.
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(worker_index) if fmt == "json" else TextFormatter())
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO), handlers=[handler], force=True)


class AccessLog:
    """Writes one ``edgeward.access`` INFO line per call (docs/logging.md).

    Rejections are always written; accepted calls are sampled at ``sample`` (a fraction, 1 keeps
    all). The caller asks ``wants()`` before it gathers the fields, so an access log that is off,
    sampled out or below the log level costs a comparison or two. The fields name the request; the
    caller never passes keys, signatures, codes or payloads.
    """

    __slots__ = ("_log", "enabled", "sample")

    def __init__(self, enabled: bool = True, sample: float = 1.0) -> None:
        self.enabled = enabled
        self.sample = sample
        self._log = logging.getLogger(ACCESS_LOGGER)

    def wants(self, accepted: bool) -> bool:
        """Whether a call with this outcome gets a line."""
        if not self.enabled or not self._log.isEnabledFor(logging.INFO):
            return False
        return not accepted or self.sample >= 1.0 or random.random() < self.sample

    def write(self, method: str, outcome: str, fields: Mapping[str, object]) -> None:
        """The line of one call: ``method``, ``outcome`` (ok or a reason code) and ``fields`` (peer,
        grpc_code or http_status, duration_ms, the request's ids)."""
        self._log.info("%s %s", method, outcome, extra={"method": method, "outcome": outcome, **fields})
