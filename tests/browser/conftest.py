"""The dashboard tests get a cloud of their own (broker, database, cloud).

The dashboard shows every vehicle of the tenant and clusters the ones that sit
close together at the zoom it opens with. With the session's shared cloud, the
vehicles other suites leave behind (elsewhere in Europe) make the map open
zoomed out and fold these tests' vans into one cluster marker, so what a test
sees would depend on which suites ran before it.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.harness import Broker, CloudStack, migrated_database


@pytest.fixture(scope="session")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CloudStack]:
    broker = Broker(tmp_path_factory.mktemp("browser-mosquitto")).start()
    try:
        with migrated_database() as dsn:
            stack = CloudStack(broker, dsn, tmp_path_factory.mktemp("browser-cloud")).start()
            try:
                yield stack
            finally:
                stack.stop()
    finally:
        broker.stop()
