"""Log lines (docs/logging.md): the JSON and text formatters, ``configure_logging``, the access log's switches."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
from collections.abc import Iterator

import orjson
import pytest

from edgeward.config import ConfigError, load
from edgeward.gateway.settings import GatewaySettings
from edgeward.runtime import ACCESS_LOGGER, AccessLog, JsonFormatter, TextFormatter

TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def _record(msg: str = "hello %s", *args: object, exc: bool = False, **extra: object) -> logging.LogRecord:
    logger = logging.getLogger("edgeward.test")
    exc_info = None
    if exc:
        try:
            raise ValueError("boom")
        except ValueError:
            exc_info = sys.exc_info()
    return logger.makeRecord(logger.name, logging.WARNING, __file__, 1, msg, args, exc_info, extra=extra)


def test_json_line_carries_the_fields_the_extras_and_the_exception() -> None:
    record = _record("hello %s", "world", exc=True, request_id="r1", size=3, level="spoofed")
    record.created, record.msecs = 1_767_225_600.25, 250.0  # 2026-01-01T00:00:00.250Z, as logging sets them
    line = orjson.loads(JsonFormatter(worker_index=2).format(record))
    assert line["time"] == "2026-01-01T00:00:00.250Z" and TIME.match(line["time"])
    assert (line["level"], line["logger"], line["message"]) == ("WARNING", "edgeward.test", "hello world")
    assert line["worker"] == {"pid": os.getpid(), "index": 2}
    assert line["request_id"] == "r1" and line["size"] == 3
    assert "ValueError: boom" in line["exc"]
    assert "args" not in line and "msg" not in line  # the record's own attributes are not extras


def test_json_line_without_worker_index_and_with_values_orjson_cannot_take() -> None:
    line = orjson.loads(JsonFormatter().format(_record(kind=set, huge=2**80)))
    assert line["worker"] == {"pid": os.getpid()} and "exc" not in line
    assert line["kind"] == "<class 'set'>" and line["huge"] == str(2**80)


def test_text_line_shows_the_extras_after_the_message() -> None:
    text = TextFormatter().format(_record("call", method="ExecuteCommand", outcome="ok", trace_id=""))
    assert text.endswith("WARNING edgeward.test: call method=ExecuteCommand outcome=ok")


@pytest.mark.parametrize(("fmt", "index"), [("json", "3"), ("text", "")])
def test_configure_logging_writes_the_format_to_stderr(fmt: str, index: str) -> None:
    code = (
        "import logging; from edgeward.runtime import configure_logging\n"
        f"configure_logging('INFO', {fmt!r}, {index or None})\n"
        "logging.getLogger('edgeward.x').debug('hidden')\n"
        "logging.getLogger('edgeward.x').info('shown', extra={'outcome': 'ok'})\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    [line] = done.stderr.splitlines()
    if fmt == "json":
        parsed = orjson.loads(line)
        assert parsed["message"] == "shown" and parsed["outcome"] == "ok" and parsed["worker"]["index"] == 3
    else:
        assert line.endswith(" INFO edgeward.x: shown outcome=ok")


@pytest.fixture
def access_level() -> Iterator[logging.Logger]:
    logger = logging.getLogger(ACCESS_LOGGER)
    level = logger.level
    yield logger
    logger.setLevel(level)


def test_access_log_wants(access_level: logging.Logger) -> None:
    access_level.setLevel(logging.INFO)
    assert AccessLog().wants(accepted=True) and AccessLog().wants(accepted=False)
    assert not AccessLog(sample=0.0).wants(accepted=True) and AccessLog(sample=0.0).wants(accepted=False)
    assert not AccessLog(enabled=False).wants(accepted=False)
    access_level.setLevel(logging.WARNING)  # EDGEWARD_LOG_LEVEL=WARNING silences it too
    assert not AccessLog().wants(accepted=False)


def test_log_settings() -> None:
    settings = load(
        GatewaySettings,
        {"EDGEWARD_LOG_FORMAT": "Text", "EDGEWARD_ACCESS_LOG": "off", "EDGEWARD_ACCESS_LOG_SAMPLE": "0.25"},
    )
    assert (settings.log_format, settings.access_log, settings.access_log_sample) == ("text", False, 0.25)
    defaults = GatewaySettings()
    assert (defaults.log_format, defaults.access_log, defaults.access_log_sample) == ("json", True, 1.0)
    with pytest.raises(ConfigError) as info:
        load(GatewaySettings, {"EDGEWARD_LOG_FORMAT": "xml", "EDGEWARD_ACCESS_LOG_SAMPLE": "1.5"})
    assert len(info.value.errors) == 2
    with pytest.raises(ConfigError):
        load(GatewaySettings, {"EDGEWARD_ACCESS_LOG_SAMPLE": "nan"})
