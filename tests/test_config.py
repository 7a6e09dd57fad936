"""Settings: parsing, all errors reported at once, flags over environment, documented."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import pytest

from edgeward.config import Address, ConfigError, add_arguments, load
from edgeward.gateway.settings import GatewaySettings
from edgeward.protection.budgets import Limit

DOCS = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"


def test_defaults_without_environment() -> None:
    settings = load(GatewaySettings, {})
    assert settings == GatewaySettings()
    assert settings.redis_url is None and settings.freshness_window_ms == 300_000


def test_environment_values_are_parsed() -> None:
    settings = load(
        GatewaySettings,
        {
            "EDGEWARD_GRPC_ADDR": "0.0.0.0:6000",
            "EDGEWARD_REDIS_URL": "redis://127.0.0.1:7000/0",
            "EDGEWARD_MAX_PAYLOAD_BYTES": "1024",
            "EDGEWARD_BUDGET_IP": "off",
            "EDGEWARD_BUDGET_USER": "5:10",
        },
    )
    assert settings.grpc_addr == Address("0.0.0.0", 6000)
    assert settings.redis_url == "redis://127.0.0.1:7000/0" and settings.max_payload_bytes == 1024
    assert settings.budget_ip is None and settings.budget_user == Limit(5, 10)


def test_every_bad_value_is_reported_at_once() -> None:
    with pytest.raises(ConfigError) as info:
        load(
            GatewaySettings,
            {
                "EDGEWARD_GRPC_ADDR": "nope",
                "EDGEWARD_BACKEND_BASE_URL": "ftp://x",
                "EDGEWARD_FRESHNESS_WINDOW_MS": "ten",
                "EDGEWARD_REDIS_URL": "http://x",
                "EDGEWARD_LOG_LEVEL": "LOUD",
                "EDGEWARD_BUDGET_SESSION": "5",
            },
        )
    lines = info.value.errors
    assert len(lines) == 6
    assert lines[0].startswith("EDGEWARD_GRPC_ADDR='nope'")


def test_flags_override_the_environment() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser, GatewaySettings)
    args = parser.parse_args(["--grpc-addr", "127.0.0.1:7001"])
    settings = load(GatewaySettings, {"EDGEWARD_GRPC_ADDR": "127.0.0.1:7000"}, vars(args))
    assert settings.grpc_addr.port == 7001
    with pytest.raises(ConfigError, match="--grpc-addr"):
        load(GatewaySettings, {}, vars(parser.parse_args(["--grpc-addr", "bad"])))


@pytest.mark.parametrize("text", ["127.0.0.1:70000", ":80", "host", "[::1]:x"])
def test_bad_addresses(text: str) -> None:
    with pytest.raises(ValueError):
        Address.parse(text)


def test_ipv6_address_round_trip() -> None:
    assert str(Address.parse("[::1]:50051")) == "[::1]:50051"


def test_every_setting_is_documented() -> None:
    text = DOCS.read_text()
    missing = [f.name for f in dataclasses.fields(GatewaySettings) if f"`EDGEWARD_{f.name.upper()}`" not in text]
    assert not missing, f"docs/configuration.md lacks {missing}"


def test_push_settings_parse_and_booleans_take_the_usual_spellings() -> None:
    settings = load(
        GatewaySettings,
        {
            "EDGEWARD_GRPC_KEEPALIVE_PERMIT_WITHOUT_CALLS": "off",
            "EDGEWARD_STREAM_QUEUE_SIZE": "16",
            "EDGEWARD_SHUTDOWN_GRACE_MS": "0",
        },
    )
    assert settings.grpc_keepalive_permit_without_calls is False
    assert settings.stream_queue_size == 16 and settings.shutdown_grace_ms == 0
    permit = load(GatewaySettings, {"EDGEWARD_GRPC_KEEPALIVE_PERMIT_WITHOUT_CALLS": "Yes"})
    assert permit.grpc_keepalive_permit_without_calls is True
    with pytest.raises(ConfigError, match="EDGEWARD_GRPC_KEEPALIVE_PERMIT_WITHOUT_CALLS='maybe'"):
        load(GatewaySettings, {"EDGEWARD_GRPC_KEEPALIVE_PERMIT_WITHOUT_CALLS": "maybe"})
    with pytest.raises(ConfigError, match="EDGEWARD_STREAM_QUEUE_SIZE"):
        load(GatewaySettings, {"EDGEWARD_STREAM_QUEUE_SIZE": "0"})


def test_edge_protection_settings() -> None:
    settings = load(
        GatewaySettings,
        {
            "EDGEWARD_TRUSTED_PROXIES": "10.0.0.0/8, 2001:db8::/32",
            "EDGEWARD_PUBLIC_LIMIT_EMAIL": "3/h:2",
            "EDGEWARD_PUBLIC_LIMIT_IP": "off",
            "EDGEWARD_LIMITER_REDIS_URL": "redis://127.0.0.1:7000/1",
            "EDGEWARD_LIMITER_ON_REDIS_ERROR": "closed",
        },
    )
    assert str(settings.trusted_proxies) == "10.0.0.0/8,2001:db8::/32"
    assert settings.public_limit_email == Limit(3 / 3600, 2) and settings.public_limit_ip is None
    assert settings.limiter_redis_url == "redis://127.0.0.1:7000/1" and settings.limiter_on_redis_error == "closed"
    assert settings.public_limiter_on_redis_error == "local" and str(GatewaySettings().trusted_proxies) == "none"
    with pytest.raises(ConfigError) as info:
        load(
            GatewaySettings,
            {
                "EDGEWARD_TRUSTED_PROXIES": "proxy.internal",
                "EDGEWARD_PUBLIC_LIMITER_ON_REDIS_ERROR": "maybe",
                "EDGEWARD_PREAUTH_FAILURE_LIMIT": "10/d:1",
                "EDGEWARD_LIMIT_IPV6_PREFIX": "129",
            },
        )
    assert len(info.value.errors) == 4


def test_grpc_web_and_cors_settings() -> None:
    assert GatewaySettings().grpc_web_addr is None and not GatewaySettings().cors_origins
    assert str(GatewaySettings().cors_origins) == "none"
    settings = load(
        GatewaySettings,
        {
            "EDGEWARD_GRPC_WEB_ADDR": "127.0.0.1:8082",
            "EDGEWARD_CORS_ORIGINS": " http://127.0.0.1:8090, https://App.Example.com ",
        },
    )
    assert settings.grpc_web_addr == Address("127.0.0.1", 8082)
    origins = settings.cors_origins
    assert origins.allows("http://127.0.0.1:8090") and origins.allows("https://app.example.com")
    assert not origins.allows("http://127.0.0.1:8091") and not origins.allows("https://app.example.com:443")
    anyone = load(GatewaySettings, {"EDGEWARD_CORS_ORIGINS": "*"}).cors_origins
    assert anyone.allows("https://anything.example") and str(anyone) == "*"
    assert not load(GatewaySettings, {"EDGEWARD_CORS_ORIGINS": "none"}).cors_origins
    for bad in ("*, http://a.example", "http://a.example/", "http://a.example/app", "ftp://a.example", "a.example"):
        with pytest.raises(ConfigError) as info:
            load(GatewaySettings, {"EDGEWARD_CORS_ORIGINS": bad})
        assert "EDGEWARD_CORS_ORIGINS" in info.value.errors[0], bad
    with pytest.raises(ConfigError):
        load(GatewaySettings, {"EDGEWARD_GRPC_WEB_ADDR": "8082"})


def test_the_pending_calls_limit_reaches_grpc_with_its_hard_limit() -> None:
    from edgeward.gateway.server import _grpc_options  # the one place settings become gRPC's options

    settings = load(GatewaySettings, {"EDGEWARD_GRPC_MAX_PENDING_CALLS": "250"})
    options = dict(_grpc_options(settings))
    assert options["grpc.server.max_pending_requests"] == 250
    assert options["grpc.server.max_pending_requests_hard_limit"] == 750
    defaults = dict(_grpc_options(GatewaySettings()))  # gRPC's own defaults, made explicit
    assert (defaults["grpc.server.max_pending_requests"], defaults["grpc.server.max_pending_requests_hard_limit"]) == (
        1000, 3000
    )
