"""Loading a batch's persons in one read (the `Index.histories` port), alike on SQLite and
PostgreSQL: unknown persons, persons without a snapshot, persons read from their latest snapshot
plus the events after it."""

from __future__ import annotations

import uuid
from datetime import timedelta
from pathlib import Path

import pytest

from adapters.event_store import environment
from domain.application import SNAPSHOT_EVERY, ChangeRecorder
from domain.identity import aggregate_id, person_key
from tests.integration.log_store import AT, unsubscribe


@pytest.fixture(params=["sqlite", "postgres"])
def log(request: pytest.FixtureRequest, tmp_path: Path) -> ChangeRecorder:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'log.sqlite'}"
    else:
        url = request.getfixturevalue("fresh_postgres_url")
    return ChangeRecorder(env=environment(url, create_table=True))


def test_histories_read_each_person_from_its_latest_snapshot(log: ChangeRecorder) -> None:
    long_changes = SNAPSHOT_EVERY * 2 + 5
    for start in range(0, long_changes, 50):
        log.record(
            [
                unsubscribe("long", at=AT + timedelta(seconds=start + i))
                for i in range(min(50, long_changes - start))
            ]
        )
    log.record([unsubscribe("short"), unsubscribe("short")])
    unknown = uuid.uuid4()
    long_id, short_id = aggregate_id(person_key("long")), aggregate_id(person_key("short"))

    found = log.index.histories([long_id, short_id, unknown])

    assert unknown not in found
    assert [e.originator_version for e in found[short_id]] == [1, 2]  # registered with the first
    snapshot, *after = found[long_id]
    at = snapshot.originator_version
    assert snapshot.topic.endswith("Snapshot") and 2 * SNAPSHOT_EVERY <= at < long_changes
    assert [e.originator_version for e in after] == list(range(at + 1, long_changes + 1))
    person = log.person(person_key("long"))
    assert person is not None and person.version == long_changes
    log.close()
