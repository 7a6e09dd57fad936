"""The session source settings (docs/sessions.md): choices parsed, redis refused without a Redis URL."""

from __future__ import annotations

import pytest

from edgeward.cli import main
from edgeward.config import ConfigError, load
from edgeward.gateway.settings import GatewaySettings


def test_the_session_source_settings_parse() -> None:
    settings = load(GatewaySettings, {})
    assert (settings.session_source, settings.session_source_fallback) == ("backend", "backend")
    settings = load(
        GatewaySettings,
        {
            "EDGEWARD_SESSION_SOURCE": "Redis",
            "EDGEWARD_SESSION_SOURCE_FALLBACK": "none",
            "EDGEWARD_REDIS_URL": "redis://127.0.0.1:7000/0",
        },
    )
    assert (settings.session_source, settings.session_source_fallback) == ("redis", "none")
    with pytest.raises(ConfigError) as info:
        load(GatewaySettings, {"EDGEWARD_SESSION_SOURCE": "etcd", "EDGEWARD_SESSION_SOURCE_FALLBACK": "maybe"})
    assert len(info.value.errors) == 2


def test_the_redis_session_source_without_a_redis_url_is_refused_at_start(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(ConfigError, match="EDGEWARD_SESSION_SOURCE='redis' needs EDGEWARD_REDIS_URL"):
        load(GatewaySettings, {"EDGEWARD_SESSION_SOURCE": "redis"})
    monkeypatch.delenv("EDGEWARD_REDIS_URL", raising=False)
    monkeypatch.setenv("EDGEWARD_SESSION_SOURCE", "redis")
    with pytest.raises(SystemExit) as exit_info:
        main(["serve"])
    assert exit_info.value.code == 2
    assert "needs EDGEWARD_REDIS_URL" in capsys.readouterr().err
