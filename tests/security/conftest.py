"""Fixtures of the security tests: a broker (and cloud) of their own, so their
service-account probes (an ingest login joining the shared subscription) and
revocations never touch the session's shared broker."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from tests.harness import Broker, CloudStack


@pytest.fixture(scope="module")
def sec_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    b = Broker(tmp_path_factory.mktemp("sec-mosquitto")).start()
    yield b
    b.stop()


@pytest.fixture(scope="module")
def sec_cloud(
    sec_broker: Broker, database: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[CloudStack]:
    stack = CloudStack(
        sec_broker,
        database,
        tmp_path_factory.mktemp("sec-cloud"),
        email=f"sec-{uuid.uuid4().hex[:8]}@test.local",
        tenant=f"sec-{uuid.uuid4().hex[:6]}",
    ).start()
    yield stack
    stack.stop()


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"
