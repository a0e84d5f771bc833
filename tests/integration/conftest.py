"""Shared by the integration tests: settings of their own on each store, SQLite and PostgreSQL,
and a Kafka broker of a module's own for the tests that stop it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from adapters.settings import Settings
from tests.integration.ingest_harness import ingest_workers, isolated_settings
from tests.integration.private_broker import PrivateBroker

__all__ = ["broker", "config", "ingest_workers"]


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateBroker]:
    """A broker of the module's own (its own ports and state): the shared one is never stopped."""
    broker = PrivateBroker(tmp_path_factory.mktemp("private-kafka"))
    broker.start()
    try:
        yield broker
    finally:
        broker.close()


@pytest.fixture(params=["sqlite", "postgres"])
def config(request: pytest.FixtureRequest, kafka_bootstrap: str, tmp_path: Path) -> Settings:
    """Isolated topics and group, on a fresh SQLite file or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'events.sqlite'}"
    else:
        request.applymarker(pytest.mark.postgres)
        url = request.getfixturevalue("fresh_postgres_url")
    return isolated_settings(kafka_bootstrap, url, tmp_path)
