"""Shared fixtures: a real redis-server per test session (flushed per test)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.redis_server import RedisServer


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
