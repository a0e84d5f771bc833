"""Shared by the nightly pass's tests: a fresh sandbox org and store per test, persons recorded
here the way the ingest records them, and readers of what the store and the org then hold."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from adapters import event_store
from adapters.inbound import Actor, PersonRef
from adapters.settings import Settings, load
from consumers import bootstrap
from consumers.nightly import PassReport
from consumers.slice_writer import to_change
from domain.application import ChangeRecorder
from domain.nightly import SOURCE
from domain.person import Person
from sandbox import Sandbox, running_sandbox
from tests.factories import good_change
from tests.salesforce.conftest import org_env

ADMIN = Actor(kind="user", id="admin-1", name="Ann Admin")
_serial = itertools.count()


@pytest.fixture
def org() -> Iterator[Sandbox]:
    """An org of its own: the pass reads every checked record, so tests never share one."""
    with running_sandbox(admin_enabled=True) as running:
        yield running


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh store on each engine."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'events.sqlite'}"
    request.applymarker(pytest.mark.postgres)
    return str(request.getfixturevalue("fresh_postgres_url"))


def settings_for(sandbox: Sandbox, database_url: str, state_dir: Path, **extra: str) -> Settings:
    env = {
        "OPTOUT_STATE_DIR": str(state_dir),
        "OPTOUT_DATABASE_URL": database_url,
        "OPTOUT_NIGHTLY_SYNC": "on",
        **org_env(sandbox),
        **extra,
    }
    config = load(env)
    bootstrap.create_tables(config.database_url)
    return config


def env_for(config: Settings) -> dict[str, str]:
    """The environment variables behind `settings_for` (for subprocesses)."""
    return {
        "OPTOUT_STATE_DIR": str(config.state_dir),
        "OPTOUT_DATABASE_URL": str(config.database_url),
    }


def record(sandbox: Sandbox, sobject: str, *, checked: bool = False, **values: Any) -> str:
    n = next(_serial)
    values.setdefault("Email", f"n{n}@{sobject.lower()}.nightly.example")
    values.setdefault("LastName", f"N{n}")
    if sobject == "Lead":
        values.setdefault("Company", "Acme")
    return sandbox.insert(sobject, HasOptedOutOfEmail=checked, **values)


def age(sandbox: Sandbox, record_id: str, days: int = 2) -> None:
    """Moves a record's SystemModstamp into the past (as if it last changed days ago)."""
    found = sandbox.store.locate(record_id)
    assert found is not None
    found[1]["SystemModstamp"] = datetime.now(UTC) - timedelta(days=days)


def here(config: Settings, *changes: Any) -> None:
    """Records changes as the ingest does (the inbound contract's change, then the domain)."""
    store = bootstrap.open_store(config)
    keys = event_store.address_keys(config)
    try:
        store.record([to_change(change, keys) for change in changes])
    finally:
        store.close()


def unsubscribed(person_id: str, record_id: str | None, *, hours_ago: float = 2) -> Any:
    return good_change(
        person=PersonRef(person_id=person_id, salesforce_id=record_id),
        occurred_at=datetime.now(UTC) - timedelta(hours=hours_ago),
    )


def removed(person_id: str, record_id: str | None, *, hours_ago: float = 1) -> Any:
    return good_change(
        type="unsubscribe_removed",
        person=PersonRef(person_id=person_id, salesforce_id=record_id),
        actor=ADMIN,
        reason="asked to hear from us again",
        occurred_at=datetime.now(UTC) - timedelta(hours=hours_ago),
    )


def run_pass(config: Settings) -> PassReport:
    run = bootstrap.nightly(config)
    try:
        return run.run()
    finally:
        run.store.close()


def reading(config: Settings) -> ChangeRecorder:
    return bootstrap.open_store(config)


def pulled(store: ChangeRecorder) -> list[Person.Unsubscribed]:
    """Every unsubscribe recorded from Salesforce."""
    return [
        change
        for change in store.all_changes()
        if isinstance(change, Person.Unsubscribed) and change.source == SOURCE
    ]


def history(store: ChangeRecorder, key: str) -> list[Person.Event]:
    return list(store.history(key))


def of_type(events: list[Person.Event], kind: type) -> list[Any]:
    return [event for event in events if isinstance(event, kind)]


def writes(sandbox: Sandbox) -> list[str]:
    """Calls that could change a record: anything but a GET or a Bulk query job (a read)."""
    return [
        f"{c.method} {c.path}"
        for c in sandbox.call_log
        if c.method != "GET" and not c.path.endswith("/jobs/query")
    ]
