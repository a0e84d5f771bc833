"""A random stream of changes and push outcomes, written straight into a real store (SQLite or
PostgreSQL), and the read models' contents, for the read-model tests."""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from adapters.event_store import environment
from consumers.read_models import MODELS, ReadModels
from domain.application import Change, ChangeKind, ChangeRecorder
from domain.identity import AddressKeys, person_key
from domain.person import Provenance, WaitingReason
from domain.push import Accepted, Refused, Waiting, record_outcomes
from projections.views import view

KEY = "k" * 32
KEYS = AddressKeys(KEY.encode())
NOW = datetime(2026, 3, 1, tzinfo=UTC)
PERSONS = [person_key(f"p{i}") for i in range(8)]
EMAILS = [f"mailbox{i}@example.com" for i in range(5)]
CONTACT, LEAD = "0035g00000AbCdEAAV", "00Q5g00000AbCdEAAV"


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'events.sqlite'}"
    request.applymarker(pytest.mark.postgres)
    url: str = request.getfixturevalue("fresh_postgres_url")
    return url


@pytest.fixture
def store(store_url: str) -> Iterator[ChangeRecorder]:
    recorder = ChangeRecorder(env=environment(store_url, create_table=True))
    yield recorder
    recorder.close()


def random_change(rnd: random.Random) -> Change:
    kind = rnd.choice([ChangeKind.UNSUBSCRIBED] * 3 + [ChangeKind.UNSUBSCRIBE_REMOVED])
    kind = ChangeKind.PERSON_LINKED if rnd.random() < 0.15 else kind
    email = rnd.choice([*EMAILS, None])
    key = rnd.choice(PERSONS + ([KEYS.key_of(email)] if email and rnd.random() < 0.3 else []))
    removal = kind is ChangeKind.UNSUBSCRIBE_REMOVED
    actor = "user" if removal else rnd.choice(["recipient", "user", "system"])
    provenance = Provenance(
        uuid.uuid4(),
        rnd.choice(["sales", "marketing", "salesforce"]),
        actor,
        "rep-1",
        "Rep One",
        rnd.choice(["email_link", "manual", "import"]),
        NOW + timedelta(minutes=rnd.randint(0, 120)),
        "asked" if removal else None,
    )
    linked = rnd.choice([CONTACT, LEAD, None]) if not removal else None
    if kind is ChangeKind.PERSON_LINKED:
        linked = linked or CONTACT
    return Change(kind, key, provenance, KEYS.key_of(email) if email else None, email, linked)


def record_stream(store: ChangeRecorder, rnd: random.Random, batches: int, size: int) -> None:
    """Changes in batches, with push outcomes between them (accepted, refused, waiting)."""
    for _ in range(batches):
        store.record([random_change(rnd) for _ in range(size)])
        key = rnd.choice(PERSONS)
        if store.person(key) is None:
            continue
        outcome = rnd.choice(
            [
                Accepted(key, CONTACT, "Contact", "HasOptedOutOfEmail", CONTACT, None, NOW),
                Refused(key, LEAD, "Lead", "UNABLE_TO_LOCK_ROW", "locked", True),
                Refused(key, LEAD, "Lead", "INVALID_ID", "gone", False),
                Waiting(key, WaitingReason.NO_SALESFORCE_ID),
            ]
        )
        record_outcomes(store, [outcome], None)


def contents(models: ReadModels) -> dict[str, list[tuple[object, ...]]]:
    """Every row of every read model's live views, sorted."""
    found: dict[str, list[tuple[object, ...]]] = {}
    names = [view(table) for model in MODELS.values() for table in model().tables]
    with models.reading(tuple(names)) as select:
        for name in names:
            found[name] = sorted(select(f"SELECT * FROM {name}"), key=repr)
    return found
