"""Shared by the ingest tests: settings of their own on each store, SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest

from adapters.settings import Settings
from tests.integration.ingest_harness import ingest_workers, isolated_settings

__all__ = ["config", "ingest_workers"]


@pytest.fixture(params=["sqlite", "postgres"])
def config(request: pytest.FixtureRequest, kafka_bootstrap: str, tmp_path: Path) -> Settings:
    """Isolated topics and group, on a fresh SQLite file or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'events.sqlite'}"
    else:
        request.applymarker(pytest.mark.postgres)
        url = request.getfixturevalue("fresh_postgres_url")
    return isolated_settings(kafka_bootstrap, url, tmp_path)
