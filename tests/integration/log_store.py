"""A store under test for the compliance commands (verify, replay): written through the real
application service, read by the real command line, and open to raw SQL as a tamperer's."""

from __future__ import annotations

import json
import os
import sqlite3
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest

from adapters.event_store import environment
from domain.application import Change, ChangeKind, ChangeRecorder
from domain.identity import AddressKeys, person_key
from domain.person import Provenance
from tests.e2e.cli import optout_sync

SECRET = "tamper-evidence-test-key-0123456789abcdef"
KEYS = AddressKeys(SECRET.encode())
AT = datetime(2026, 10, 1, 9, 0, tzinfo=UTC)


def unsubscribe(person_id: str, email: str | None = None, at: datetime = AT) -> Change:
    """A recipient's unsubscribe via marketing, for a person (and the address it names)."""
    provenance = Provenance(uuid.uuid4(), "marketing", "recipient", None, None, "email_link", at)
    mailbox = KEYS.key_of(email) if email else None
    return Change(ChangeKind.UNSUBSCRIBED, person_key(person_id), provenance, mailbox, email)


class Store:
    """A store under test: its URL, the environment of a command line on it, and raw SQL."""

    def __init__(self, url: str, state_dir: Path) -> None:
        self.url = url
        self.env = {
            **os.environ,
            "OPTOUT_DATABASE_URL": url,
            "OPTOUT_STATE_DIR": str(state_dir),
            "OPTOUT_ADDRESS_KEY": SECRET,
        }
        self.sqlite = url.startswith("sqlite")
        self.events = "stored_events" if self.sqlite else "optout_events"
        self.id = "rowid" if self.sqlite else "notification_id"

    def record(self, *batches: list[Change]) -> None:
        log = ChangeRecorder(env=environment(self.url, create_table=True))
        try:
            for batch in batches:
                log.record(batch)
        finally:
            log.close()

    def sql(self, *statements: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Runs statements as someone with write access to the tables would (the last one's rows)."""
        rows: list[tuple[Any, ...]] = []
        if self.sqlite:
            with sqlite3.connect(self.url[len("sqlite:///") :]) as connection:
                for statement in statements:
                    rows = connection.execute(
                        statement, params if "?" in statement else ()
                    ).fetchall()
            return rows
        with psycopg.connect(self.url, autocommit=True) as connection:
            for statement in statements:
                cursor = connection.execute(
                    statement.replace("?", "%s"), params if "?" in statement else ()
                )
                rows = cursor.fetchall() if cursor.description else []
        return rows

    def verify(self, *args: str) -> tuple[int, dict[str, Any]]:
        result = optout_sync("verify", "--json", *args, env=self.env, timeout=120)
        assert result.stdout, result.stderr
        return result.returncode, json.loads(result.stdout)


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'events.sqlite'}"
    else:
        request.applymarker(pytest.mark.postgres)
        url = request.getfixturevalue("fresh_postgres_url")
    yield Store(url, tmp_path)
