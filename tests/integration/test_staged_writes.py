"""Batches staged ahead of their write (the ingest's overlapped path: a part is staged while the
one before it is written) store exactly the rows that recording them one after another stores —
the same events, versions and states, index rows and positions — for any cut of a mixed stream
into batches, persons changed in consecutive batches and new persons changed again before their
first change is stored among them. A write that fails leaves nothing staged behind it: the
batches after it are abandoned and recorded afresh, and the log is as if none had been staged."""

from __future__ import annotations

import itertools
import json
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import msgspec
import pytest
from eventsourcing.persistence import IntegrityError, Tracking
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kafka import TopicPartition

from adapters import kafka_clients
from adapters.event_store import environment
from adapters.inbound import encode
from adapters.settings import Settings
from consumers.slice_writer import (
    OVERLAP_PART,
    OVERLAP_PARTS,
    IngestStats,
    SliceWriter,
    to_change,
    tracking_name,
)
from devservices import database as local_postgres
from domain.application import Change, ChangeBatch, ChangeRecorder, StagedBatch
from domain.identity import AddressKeys
from tests.integration.mixed_stream import mixed_changes
from tests.tools import kcat_read

KEYS = AddressKeys(b"staged-writes-test-key-0123456789abcdef")
STREAM = [to_change(message, KEYS) for message in mixed_changes(60, persons=8, seed=11)]
SOURCE = "changes:0"

Log = tuple[list[tuple[object, ...]], dict[str, object]]


@pytest.fixture(params=["sqlite", "postgres"])
def new_store(request: pytest.FixtureRequest) -> Iterator[object]:
    """Makes fresh, empty stores of one kind (a URL each time it is called)."""
    with tempfile.TemporaryDirectory() as scratch:
        if request.param == "sqlite":
            yield lambda: f"sqlite:///{Path(scratch) / f'{uuid.uuid4().hex}.sqlite'}"
        else:
            request.applymarker(pytest.mark.postgres)
            server = request.getfixturevalue("postgres_url")
            yield lambda: local_postgres.create_database(server, f"t_{uuid.uuid4().hex[:16]}")


@contextmanager
def recorder_on(url: str) -> Iterator[ChangeRecorder]:
    log = ChangeRecorder(env=environment(url, create_table=True, writer=True))
    try:
        yield log
    finally:
        log.close()


def cut(stream: Sequence[Change], cuts: Sequence[int]) -> list[list[Change]]:
    bounds = [0, *sorted(set(cuts)), len(stream)]
    return [list(stream[a:b]) for a, b in itertools.pairwise(bounds) if b > a]


def recorded_one_by_one(url: str, batches: list[list[Change]]) -> None:
    with recorder_on(url) as log:
        for number, batch in enumerate(batches):
            log.record(batch, Tracking(SOURCE, number))


def staged_one_ahead(url: str, batches: list[list[Change]]) -> None:
    """As the ingest's overlapped path does: batch k+1 is staged before batch k is stored."""
    with recorder_on(url) as log:
        pending: StagedBatch | None = None
        for number, batch in enumerate(batches):
            staged = log.stage(batch, Tracking(SOURCE, number))
            if pending is not None:
                log.store_staged(pending)
                log.settle(pending)
            pending = staged
        if pending is not None:
            log.store_staged(pending)
            log.settle(pending)


def log_of(url: str, changes: Sequence[Change] = STREAM, source: str = SOURCE) -> Log:
    """The stored events in store order, and what the index answers for these changes."""
    with recorder_on(url) as log:
        events = [
            (n.originator_id, n.originator_version, n.topic, _without_timestamp(n.state))
            for n in log.recorder.select_notifications(None, 1_000_000)
        ]
        mailboxes = sorted({c.mailbox for c in changes if c.mailbox is not None})
        index = {
            "recorded": sorted(
                map(str, log.index.recorded_changes({c.provenance.event_id for c in changes}))
            ),
            "carriers": {m: sorted(log.carriers(m)) for m in mailboxes},
            "addresses": {m: log.address(m) for m in mailboxes},
            "position": log.position(source),
        }
    return events, index


def _without_timestamp(state: bytes) -> dict[str, object]:
    """An event's state but for when it was made (each run makes its own)."""
    fields: dict[str, object] = json.loads(state)
    fields.pop("timestamp")
    return fields


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(cuts=st.lists(st.integers(1, len(STREAM) - 1), max_size=12))
def test_batches_staged_one_ahead_store_what_recording_them_in_turn_stores(
    new_store: object, cuts: list[int]
) -> None:
    batches = cut(STREAM, cuts)
    one_by_one, one_ahead = new_store(), new_store()  # type: ignore[operator]
    recorded_one_by_one(one_by_one, batches)
    staged_one_ahead(one_ahead, batches)
    assert log_of(one_ahead) == log_of(one_by_one)


def test_a_staged_write_that_fails_abandons_the_batches_staged_after_it(new_store: object) -> None:
    """A person's first change is staged, then changed again in the next staged batch; another
    writer stores a change of that person first. The first write is refused, both batches are
    abandoned and recorded afresh: the log is the interloper's change, then both batches."""
    keys = [c.person_key for c in STREAM if c.person_key.startswith("person:")]
    person = max(keys, key=keys.count)
    theirs = [c for c in STREAM if c.person_key == person]
    assert len(theirs) >= 3, "the stream must change this person three times"
    interloper, first, second = [theirs[0]], [theirs[1]], theirs[2:]
    expected, actual = new_store(), new_store()  # type: ignore[operator]
    with recorder_on(expected) as log:
        log.record(interloper)
        log.record(first, Tracking(SOURCE, 0))
        log.record(second, Tracking(SOURCE, 1))
    with recorder_on(actual) as log:
        staged = [log.stage(first, Tracking(SOURCE, 0)), log.stage(second, Tracking(SOURCE, 1))]
        with recorder_on(actual) as other:
            other.record(interloper)
        with pytest.raises(IntegrityError):
            log.store_staged(staged[0])
        log.abandon(staged)
        log.record(first, Tracking(SOURCE, 0))
        log.record(second, Tracking(SOURCE, 1))
    assert log_of(actual) == log_of(expected)
    assert [version for _, version, _, _ in log_of(actual)[0]] == list(
        range(1, 1 + len(log_of(actual)[0]))
    )


@dataclass(frozen=True)
class Record:
    """A consumed Kafka record, as far as the ingest reads one."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]] = field(default_factory=list)


def histories(url: str) -> dict[object, list[tuple[object, ...]]]:
    """Each person's stored events, oldest first, but for when each was made."""
    found: dict[object, list[tuple[object, ...]]] = {}
    for event in log_of(url, ())[0]:
        found.setdefault(event[0], []).append(event[1:])
    return found


def test_a_part_refused_mid_slice_leaves_the_parts_before_it_stored_and_the_rest_stored_once(
    config: Settings,
) -> None:
    """The ingest stores a slice in parts; another writer changes a person of the second part
    between its staging and its write. That write is refused: the first part stays stored, the
    second and the third (staged meanwhile) are abandoned and stored the careful way, and every
    change is stored once, with the dead letter of the third part sent once."""
    messages = mixed_changes(1200, persons=300, seed=5)
    values = [encode(message) for message in messages]
    values[900] = b"{not json"  # in the fourth part: dead-lettered while a part is in flight
    tp = TopicPartition(config.topic_inbound, 0)
    records = [
        Record(tp.topic, tp.partition, offset, None, value) for offset, value in enumerate(values)
    ]
    overlapping = msgspec.structs.replace(config, ingest_overlap=True)
    store = ChangeRecorder(env=environment(config.database_url, writer=True))
    other = ChangeRecorder(env=environment(config.database_url, writer=True))
    interloper: list[Change] = []
    writes = 0
    store_staged = store.store_staged

    def raced(staged: StagedBatch) -> ChangeBatch:
        nonlocal writes
        writes += 1
        if writes == 2:  # the second part: another writer changes one of its persons first
            person = staged.batch.changes[0]
            fresh = msgspec.structs.replace(person.provenance, event_id=uuid.uuid4())
            interloper.append(msgspec.structs.replace(person, provenance=fresh))
            other.record(interloper)
        return store_staged(staged)

    store.store_staged = raced  # type: ignore[method-assign]
    producer = kafka_clients.producer(config)
    writer = SliceWriter(overlapping, store, producer, IngestStats(), time.sleep, KEYS)
    try:
        writer.save(tp, records)
    finally:
        writer.close()
        producer.close()
        store.close()
        other.close()
    assert writes == 2 and interloper, "the slice was stored in parts, and the race happened"

    # What it must equal: the first part, the other writer's change, then the rest, in turn.
    part = -(-len(records) // min(OVERLAP_PARTS, len(records) // OVERLAP_PART))
    good = {i: to_change(m, KEYS) for i, m in enumerate(messages) if i != 900}
    expected = f"sqlite:///{config.state_dir / 'expected.sqlite'}"
    with recorder_on(expected) as log:
        log.record([good[i] for i in range(part)], Tracking(tracking_name(tp), part - 1))
        log.record(interloper)
        rest = [change for i, change in good.items() if i >= part]
        log.record(rest, Tracking(tracking_name(tp), len(records) - 1))
    assert histories(config.database_url) == histories(expected)
    changes, source = [*interloper, *good.values()], tracking_name(tp)
    assert log_of(config.database_url, changes, source)[1] == log_of(expected, changes, source)[1]
    assert len(kcat_read(config.kafka_bootstrap_servers, config.topic_dead_letter)) == 1
