"""PostgreSQL's binary COPY of stored events stores what eventsourcing's own insert stores, byte
for byte: the same calls (every kind of change, outcome events, an input gap, a position alone,
a redelivered position, a version conflict, a change recorded twice) are made through the
library's path into one fresh database and through the COPY path into another, and every table
the transaction writes is compared. Snapshots have their own recorder (the library's insert) and
are not part of either path."""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from eventsourcing.persistence import IntegrityError, StoredEvent, Tracking
from eventsourcing.postgres import PostgresProcessRecorder
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.event_store import CARRIERS, CHANGE_IDS, PostgresStore, environment
from adapters.log_chain import CHAIN
from adapters.pg_arrays import text_array, uuid_array
from devservices import database as local_postgres
from domain.application import Change, ChangeKind, ChangeRecorder
from domain.identity import AddressKeys, aggregate_id
from domain.person import Provenance, WaitingReason

KEYS = AddressKeys(b"c" * 32)
AT = datetime(2026, 5, 1, 9, 30, tzinfo=UTC)
# Rows refused with the whole transaction: what the tests expect a refused call to raise.
REFUSED = IntegrityError


class LibraryPathStore(PostgresStore):
    """eventsourcing's insert (the composite array) with our index rows and chain link."""

    insert_events = PostgresProcessRecorder.insert_events


@dataclass
class Call:
    stored_events: list[StoredEvent]
    kwargs: dict[str, Any]
    refused: bool = False


CALLS: list[Call] = []


class Capturing(PostgresStore):
    """Keeps each call of a store's path (and whether it was refused), to replay or inspect it."""

    def insert_events(
        self, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        call = Call(list(stored_events), dict(kwargs))
        CALLS.append(call)
        try:
            return super().insert_events(stored_events, **kwargs)
        except IntegrityError:
            call.refused = True
            raise


class CapturingLibraryStore(Capturing, LibraryPathStore):
    """The library's path, keeping each call to replay it."""


class CapturingCopyStore(Capturing):
    """The COPY path, keeping each call."""


def recorder_at(url: str, store: type[PostgresStore] = PostgresStore) -> ChangeRecorder:
    env = environment(url, create_table=True, writer=True)
    env["PROCESS_RECORDER_TOPIC"] = f"{store.__module__}:{store.__qualname__}"
    recorder = ChangeRecorder(env=env)
    assert type(recorder.recorder) is store
    return recorder


@pytest.fixture
def databases(postgres_url: str) -> Iterator[tuple[str, str]]:
    """Two fresh, empty databases on the test server, dropped after the test."""
    names = [f"t_{uuid.uuid4().hex[:16]}" for _ in range(2)]
    urls = [local_postgres.create_database(postgres_url, name) for name in names]
    try:
        yield urls[0], urls[1]
    finally:
        for name in names:
            local_postgres.drop_database(postgres_url, name)


def change(
    key: str,
    kind: ChangeKind = ChangeKind.UNSUBSCRIBED,
    *,
    email: str | None = None,
    at: datetime = AT,
    salesforce_id: str | None = None,
    event_id: uuid.UUID | None = None,
) -> Change:
    removal = kind is ChangeKind.UNSUBSCRIBE_REMOVED  # needs a named user and a reason
    provenance = Provenance(
        event_id or uuid.uuid4(),
        "sales",
        "user" if removal else "recipient",
        "admin" if removal else None,
        None,
        "manual" if removal else "email_link",
        at,
        "asked" if removal else None,
    )
    mailbox = KEYS.key_of(email) if email else None
    return Change(kind, key, provenance, mailbox, email, salesforce_id)


def every_kind_of_write(log: ChangeRecorder) -> None:
    """The writes the product makes, through the ChangeRecorder, plus refused ones."""
    ada = change("person:ada", email="ada@example.com")
    log.record(
        [
            ada,  # a new person, with an address: index rows for the id, carrier and address
            change("person:bob"),  # a new person without an address
            change(KEYS.key_of("cy@example.com"), email="cy@example.com"),  # by address only
            change("person:dee", email="shared@example.com"),
            change("person:eve", email="shared@example.com"),  # a second carrier
        ],
        Tracking("inbound:0", 10),
    )
    log.record(
        [
            change("person:ada", ChangeKind.UNSUBSCRIBE_REMOVED, at=AT + timedelta(hours=1)),
            change(
                "person:bob",
                ChangeKind.PERSON_LINKED,
                salesforce_id="003000000000001AAA",
                at=AT + timedelta(hours=2),
            ),
            change("person:ada", email="ada@example.com", at=AT + timedelta(hours=3)),
            change("person:fay", email="fay@example.com"),
        ],
        Tracking("inbound:1", 5),
    )
    # The same change again under another key, through another partition: refused by the index
    # of change ids, then written without it.
    log.record(
        [
            Change(ada.kind, KEYS.key_of("ada@example.com"), ada.provenance, ada.mailbox, None),
            change("person:gus"),
        ],
        Tracking("inbound:2", 7),
    )
    with pytest.raises(REFUSED):  # a redelivered position
        log.record([change("person:hal")], Tracking("inbound:0", 10))
    log.record_gap("inbound:3", 0, 99, "operator")
    # Outcome events (the pusher's), and a position written alone (the publisher's).
    ada_person, bob = log.person("person:ada"), log.person("person:bob")
    assert ada_person is not None and bob is not None
    ada_person.push_refused(
        record_id="003000000000002AAA",
        object_type="Contact",
        code="X",
        message="m",
        will_retry=True,
    )
    bob.push_accepted(
        record_id="003000000000001AAA",
        object_type="Contact",
        field="HasOptedOutOfEmail",
        written_id="003000000000001AAA",
        converted_contact_id=None,
        accepted_at=AT + timedelta(days=1),
    )
    bob.push_waiting(next(iter(WaitingReason)))
    log.save_with_position([ada_person, bob], Tracking("pusher", 3))
    log.save_with_position([], Tracking("publisher:0", 12))
    # A version already stored (a concurrent writer got there first): refused, nothing written.
    # Last: both paths leave a gap in the id sequence then, of another size (the library's
    # INSERT ... SELECT drew 4 ids for 2 rows, COPY 2), which later ids would show.
    # The first row is new, the second taken: neither is written, nor the position.
    gus = log.recorder.select_events(aggregate_id("person:gus"))
    assert [e.originator_version for e in gus] == [1]  # registered with the first change
    with pytest.raises(REFUSED):
        log.recorder.insert_events(
            [
                StoredEvent(e.originator_id, v, e.topic, e.state)
                for e, v in ((gus[0], 2), (gus[0], 1))
            ],
            tracking=Tracking("inbound:2", 8),
        )


TABLES = {
    "events": "SELECT notification_id, originator_id, originator_version, topic, state "
    "FROM {events} ORDER BY notification_id",
    "tracking": "SELECT application_name, notification_id FROM {tracking} "
    "ORDER BY application_name",
    "change ids": f"SELECT event_id FROM {CHANGE_IDS} ORDER BY event_id",
    "carriers": f"SELECT mailbox, person_key FROM {CARRIERS} ORDER BY mailbox, person_key",
    "addresses": "SELECT mailbox, email, erased_at FROM optout_addresses ORDER BY mailbox",
    "chain": f"SELECT seq, first_id, last_id, digests, head, sealed FROM {CHAIN} ORDER BY seq",
}


def rows(log: ChangeRecorder) -> dict[str, list[tuple[Any, ...]]]:
    recorder = log.recorder
    assert isinstance(recorder, PostgresStore)
    names = {"events": recorder.events_table_name, "tracking": recorder.tracking_table_name}
    with recorder.datastore.get_connection() as conn, conn.cursor(row_factory=_tuples) as curs:
        found = {}
        for table, query in TABLES.items():
            curs.execute(query.format(**names))  # type: ignore[arg-type]
            found[table] = [
                tuple(bytes(v) if isinstance(v, memoryview) else v for v in r)
                for r in curs.fetchall()
            ]
        return found


def _tuples(cursor: Any) -> Any:
    return psycopg.rows.tuple_row(cursor)


def test_the_copy_path_stores_what_the_library_stores_byte_for_byte(
    databases: tuple[str, str],
) -> None:
    library_url, copy_url = databases
    CALLS.clear()
    every_kind_of_write(recorder_at(library_url, CapturingLibraryStore))
    assert [c.refused for c in CALLS].count(True) >= 3, CALLS  # each refusal went through it
    assert any(not c.stored_events for c in CALLS)  # and a position alone

    copier = recorder_at(copy_url)
    assert copier.recorder.copies  # type: ignore[attr-defined]
    for call in CALLS:
        if call.refused:
            with pytest.raises(REFUSED):
                copier.recorder.insert_events(call.stored_events, **call.kwargs)
        else:
            copier.recorder.insert_events(call.stored_events, **call.kwargs)

    expected, got = rows(recorder_at(library_url)), rows(copier)
    assert len(expected["events"]) >= 14 and len(expected["chain"]) >= 5
    for table in TABLES:
        assert got[table] == expected[table], table


def test_a_refused_copy_writes_nothing_and_a_stored_one_is_notified(
    fresh_postgres_url: str,
) -> None:
    log = recorder_at(fresh_postgres_url)
    recorder = log.recorder
    assert isinstance(recorder, PostgresStore) and recorder.copies
    log.record([change("person:ada", email="ada@example.com")], Tracking("inbound:0", 4))
    before = rows(log)

    with pytest.raises(IntegrityError):  # a redelivered position: the tracking fence
        log.record([change("person:bob", email="bob@example.com")], Tracking("inbound:0", 4))
    ada = recorder.select_events(aggregate_id("person:ada"))
    taken = StoredEvent(ada[0].originator_id, 1, ada[0].topic, ada[0].state)
    new = StoredEvent(uuid.uuid4(), 1, ada[0].topic, ada[0].state)
    with pytest.raises(IntegrityError):  # a version another writer stored: the primary key
        recorder.insert_events([new, taken], tracking=Tracking("inbound:0", 5))
    with pytest.raises(IntegrityError):  # a change id recorded before: the index
        recorder.insert_events([new], tracking=Tracking("inbound:0", 5), change_ids=before_ids(log))
    assert rows(log) == before

    with psycopg.connect(fresh_postgres_url, autocommit=True) as listener:
        listener.execute(f'LISTEN "{recorder.channel_name}"')
        log.record([change("person:cy")], Tracking("inbound:0", 5))
        notified = [n.channel for n in listener.notifies(timeout=30, stop_after=1)]
    assert notified == [recorder.channel_name]
    assert rows(log)["tracking"] == [("__migration__", 1), ("inbound:0", 5)]


def before_ids(log: ChangeRecorder) -> list[uuid.UUID]:
    return [row[0] for row in rows(log)["change ids"]]


def test_a_stale_writer_is_refused_by_copy_and_records_again_on_a_fresh_read(
    fresh_postgres_url: str,
) -> None:
    """Two writers of one person (a partition moved): the one whose cached person is behind
    is refused (eventsourcing's IntegrityError, from COPY's unique violation), writes nothing,
    and ChangeRecorder.record applies the change again on the person read afresh."""
    stale, other = (
        recorder_at(fresh_postgres_url, CapturingCopyStore),
        recorder_at(fresh_postgres_url),
    )
    # Two changes: built as an aggregate and cached (one change of a new person is not).
    stale.record(
        [change("person:ada", email="ada@example.com"), change("person:ada")],
        Tracking("inbound:0", 1),
    )
    other.record([change("person:ada", at=AT + timedelta(hours=1))], Tracking("inbound:1", 1))
    CALLS.clear()
    stale.record([change("person:ada", at=AT + timedelta(hours=2))], Tracking("inbound:0", 2))

    assert [call.refused for call in CALLS] == [True, False]  # refused, then written
    # The first change registered the person: versions 1 and 2, then the other writer's 3.
    assert [e.originator_version for e in CALLS[0].stored_events] == [3]  # the stale version
    assert [e.originator_version for e in CALLS[1].stored_events] == [4]
    history = stale.recorder.select_events(aggregate_id("person:ada"))
    assert [e.originator_version for e in history] == [1, 2, 3, 4]
    assert stale.positions(["inbound:0", "inbound:1"]) == {"inbound:0": 2, "inbound:1": 1}


_TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"))


def test_array_literals_carry_what_the_lists_carry(postgres_url: str) -> None:
    """The index rows go as array literals: any text (quotes, backslashes, braces, commas,
    spaces, NULL, the empty string) and any uuid must arrive as psycopg's list would send it."""
    with psycopg.connect(postgres_url, autocommit=True) as connection:

        @settings(max_examples=200, deadline=None)
        @given(texts=st.lists(_TEXT, max_size=20), ids=st.lists(st.uuids(), max_size=20))
        def same(texts: list[str], ids: list[uuid.UUID]) -> None:
            row = connection.execute(
                "SELECT %s::text[], %s::text[], %s::uuid[], %s::uuid[]",
                [text_array(texts), texts, uuid_array(ids), ids],
            ).fetchone()
            assert row is not None
            assert row[0] == row[1] == texts and row[2] == row[3] == ids

        same()
