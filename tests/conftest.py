"""Fixtures: real services started and torn down by the tests themselves.

- ``broker``: a Mosquitto on a free port with the project's mosquitto/conf.d.
- ``database``: a fresh PostgreSQL database, migrated with ``fleet-cloud migrate``.
- ``cloud``: ``fleet-cloud serve`` (ingest + API + dashboard) against both.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import (
    ARTIFACTS,
    Broker,
    CloudStack,
    RedisServer,
    migrated_database,
)


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    b = Broker(tmp_path_factory.mktemp("mosquitto")).start()
    yield b
    b.stop()


@pytest.fixture(scope="session")
def database() -> Iterator[str]:
    """DSN of a fresh database with every migration applied."""
    with migrated_database() as dsn:
        yield dsn


@pytest.fixture(scope="session")
def cloud(
    broker: Broker, database: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[CloudStack]:
    """The whole cloud side, as ``make up`` runs it, on the test broker and database."""
    stack = CloudStack(broker, database, tmp_path_factory.mktemp("cloud")).start()
    yield stack
    stack.stop()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    r = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield r
    r.stop()
