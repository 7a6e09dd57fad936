"""Shared fixtures: the native/pure twins of each hot-path concern, a real redis-server and a real
Redis Cluster.

Every behaviour test of a hot-path concern takes its ``*_impl`` fixture and so runs against
both twins, with ids ``c`` (native, marked ``native``) and ``py``; none imports a twin directly.
``--no-native`` deselects the native legs (for a pure build made with EDGEWARD_NO_EXTENSIONS=1);
without it, a native module that was not built is an import error, never a silent skip.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from types import ModuleType

import pytest

from tests.support.redis_cluster import RedisCluster
from tests.support.redis_server import RedisServer


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--no-native", action="store_true", help="run only the pure-Python twins")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not config.getoption("--no-native"):
        return
    kept = [item for item in items if item.get_closest_marker("native") is None]
    config.hook.pytest_deselected(items=[item for item in items if item not in kept])
    items[:] = kept


def _twins(concern: str) -> list[object]:
    return [
        pytest.param(f"edgeward.native._{concern}_c", id="c", marks=pytest.mark.native),
        pytest.param(f"edgeward.native._{concern}_py", id="py"),
    ]


@pytest.fixture(scope="session", params=_twins("crypto"))
def crypto_impl(request: pytest.FixtureRequest) -> ModuleType:
    return importlib.import_module(request.param)


@pytest.fixture(scope="session", params=_twins("envelope"))
def envelope_impl(request: pytest.FixtureRequest) -> ModuleType:
    return importlib.import_module(request.param)


@pytest.fixture(scope="session", params=_twins("session_lru"))
def session_lru_impl(request: pytest.FixtureRequest) -> ModuleType:
    return importlib.import_module(request.param)


@pytest.fixture(scope="session")
def redis_server_session() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start()
    yield server
    server.close()


@pytest.fixture
def redis_server(redis_server_session: RedisServer) -> RedisServer:
    """The session's redis-server, running and empty (a test that stopped it gets it back)."""
    if redis_server_session.proc is None:
        redis_server_session.start()
    redis_server_session.flushall()
    return redis_server_session


@pytest.fixture(scope="module")
def cluster() -> Iterator[RedisCluster]:
    """A 3-master, 3-replica cluster per test module (tests that kill a node bring it back)."""
    cluster = RedisCluster()
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.close()
