"""The SQLite store writes a batch's events in one executemany: the rows (notification ids
included) must be exactly what eventsourcing's own recorder writes."""

from __future__ import annotations

import uuid
from pathlib import Path

from eventsourcing.persistence import StoredEvent, Tracking
from eventsourcing.sqlite import SQLiteDatastore, SQLiteProcessRecorder

from adapters.event_store import SQLiteStore


def rows(
    recorder: SQLiteProcessRecorder,
) -> tuple[list[tuple[object, ...]], list[tuple[object, ...]]]:
    with recorder.datastore.transaction(commit=False) as c:
        c.execute("SELECT rowid, * FROM stored_events ORDER BY rowid")
        events = [tuple(row) for row in c.fetchall()]
        c.execute("SELECT * FROM tracking")
        tracking = [tuple(row) for row in c.fetchall()]
    return events, tracking


def test_the_batched_insert_stores_what_the_library_stores() -> None:
    ids = [uuid.uuid4() for _ in range(3)]
    batches = [
        [StoredEvent(i, v, f"topic:{v}", f'{{"n":{v}}}'.encode()) for i in ids for v in (1, 2)],
        [StoredEvent(ids[0], 3, "topic:3", b"{}")],
    ]
    stores = []
    for recorder_class in (SQLiteProcessRecorder, SQLiteStore):
        recorder = recorder_class(SQLiteDatastore(":memory:"))
        recorder.create_table()
        for position, batch in enumerate(batches):
            recorder.insert_events(batch, tracking=Tracking("inbound:0", position))
        stores.append(rows(recorder))
    library, ours = stores
    assert ours == library and len(ours[0]) == 7


def test_every_connection_of_the_store_gets_its_cache_and_checkpoint_settings(
    tmp_path: Path,
) -> None:
    store = SQLiteStore(SQLiteDatastore(str(tmp_path / "log.sqlite"), pool_size=2))
    store.create_table()
    transaction = store.datastore.transaction
    # Two at once: the second is another pooled connection.
    with transaction(commit=False) as first, transaction(commit=False) as second:
        for c in (first, second):
            settings = {}
            for pragma in ("cache_size", "wal_autocheckpoint", "journal_size_limit"):
                c.execute(f"PRAGMA {pragma}")
                settings[pragma] = c.fetchone()[0]
            assert settings == {
                "cache_size": -262144,
                "wal_autocheckpoint": 20000,
                "journal_size_limit": 67108864,
            }
