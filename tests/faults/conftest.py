"""Fixtures of the fault tests: a broker (and cloud) of their own, so killing it
leaves the session's shared broker alone."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import Broker, CloudStack


@pytest.fixture
def own_cloud(database: str, tmp_path: Path) -> Iterator[CloudStack]:
    """A private Mosquitto + ``fleet-cloud serve`` on the session's database."""
    broker = Broker(tmp_path / "mosquitto").start()
    cloud = None
    try:
        cloud = CloudStack(
            broker, database, tmp_path / "cloud", email=f"{uuid.uuid4().hex[:8]}@faults.test"
        )
        cloud.start()
        yield cloud
    finally:
        if cloud is not None:
            cloud.stop()
        broker.stop()
