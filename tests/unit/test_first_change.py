"""A new person's first change, stored without building the person, stores exactly what the
library's path (register, apply, map) stores: the same rows, byte for byte, on every kind of
change and in batches that mix new, known and repeated persons. Either way it is one stored event
(`Person.FirstUnsubscribed` and its siblings); histories stored the older way (a `Registered`
and the change) load to the same person."""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
import pytest
from eventsourcing import domain as es_domain
from eventsourcing.persistence import Tracking
from eventsourcing.utils import get_topic
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.event_store import ADDRESSES, CARRIERS, CHANGE_IDS, environment
from domain.application import Change, ChangeKind, ChangeRecorder, ChangesFailed
from domain.identity import AddressKeys
from domain.person import FIRST_CHANGES, Person, Provenance

RECORDED = datetime(2026, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
KEYS = AddressKeys(b"k" * 32)


@pytest.fixture(autouse=True)
def fixed_clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every event's recorded time, on both paths (the clock, not the code under test)."""
    monkeypatch.setattr(
        es_domain.CanCreateTimestamp, "create_timestamp", staticmethod(lambda: RECORDED)
    )
    yield


def recorder(path: Path, direct: bool) -> ChangeRecorder:
    store = ChangeRecorder(env=environment(f"sqlite:///{path}", create_table=True, writer=True))
    store._direct = direct
    return store


def rows(path: Path) -> dict[str, list[tuple[object, ...]]]:
    with sqlite3.connect(path) as db:
        return {
            "events": db.execute(
                "SELECT originator_id, originator_version, topic, state FROM stored_events "
                "ORDER BY originator_id, originator_version"
            ).fetchall(),
            "tracking": db.execute("SELECT * FROM tracking ORDER BY 1, 2").fetchall(),
            **{
                table: db.execute(f"SELECT * FROM {table} ORDER BY 1").fetchall()
                for table in (CHANGE_IDS, CARRIERS, ADDRESSES)
            },
        }


def make_change(
    kind: ChangeKind, person: int, email: int | None, actor: str, past_s: int
) -> Change:
    key = f"person:p{person}" if person >= 0 else None
    address = f"a{email}@example.com" if email is not None else None
    mailbox = KEYS.key_of(address) if address else None
    removal = kind is ChangeKind.UNSUBSCRIBE_REMOVED
    provenance = Provenance(
        uuid.uuid4(),
        "marketing" if actor == "recipient" else "sales",
        "user" if removal else actor,
        "admin" if removal else f"{actor}@example.com",  # an address-like id is scrubbed
        "Ann <ann@example.com>",
        "manual",
        RECORDED - timedelta(seconds=past_s),
        "asked by ann@example.com" if removal or past_s % 2 else None,
    )
    salesforce_id = (
        "0038d00000ABCDEAAA" if kind is ChangeKind.PERSON_LINKED or past_s % 3 == 0 else None
    )
    return Change(kind, key or mailbox or "", provenance, mailbox, address, salesforce_id)


changes = st.builds(
    make_change,
    st.sampled_from(list(ChangeKind)),
    st.integers(-1, 5),
    st.none() | st.integers(0, 3),
    st.sampled_from(["recipient", "user"]),
    st.integers(0, 10**6),
).filter(lambda c: c.person_key != "")


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(batches=st.lists(st.lists(changes, min_size=1, max_size=6), min_size=1, max_size=4))
def test_first_changes_store_what_the_library_path_stores(
    tmp_path_factory: pytest.TempPathFactory, batches: list[list[Change]]
) -> None:
    here = tmp_path_factory.mktemp("paths")
    stores = {direct: recorder(here / f"{direct}.sqlite", direct) for direct in (False, True)}
    for offset, batch in enumerate(batches):
        for store in stores.values():
            store.record(batch, Tracking("changes:0", offset))
    for store in stores.values():
        store.close()
    stored = rows(here / "True.sqlite")
    assert stored == rows(here / "False.sqlite")
    # Every person starts with one event that registers them and is their first change.
    firsts = {get_topic(first) for first in FIRST_CHANGES.values()}
    assert {topic for _, version, topic, _ in stored["events"] if version == 1} <= firsts


@pytest.mark.parametrize("kind", list(ChangeKind))
def test_each_kind_for_a_new_person_takes_the_direct_path(tmp_path: Path, kind: ChangeKind) -> None:
    change = make_change(kind, 1, 2, "recipient", 3)
    paths = {direct: tmp_path / f"{direct}.sqlite" for direct in (False, True)}
    for direct, path in paths.items():
        store = recorder(path, direct)
        batch = store.record([change], Tracking("changes:0", 0))
        assert batch.recorded == 1
        assert bool(batch.persons) is not direct  # the direct path built no person
        store.close()
    assert rows(paths[True]) == rows(paths[False])
    [(_, version, topic, _)] = rows(paths[True])["events"]  # one event registers and changes
    assert version == 1 and topic == get_topic(FIRST_CHANGES[_CHANGE_CLASSES[kind]])
    store = recorder(paths[True], True)
    assert store._firsts.direct  # the store's transcoder writes the library's JSON: straight
    person = store.person(change.person_key)
    assert person is not None and person.version == 1  # it loads like any other person
    [event] = store.history(change.person_key)
    assert isinstance(event, Person.Registered) and isinstance(event, _CHANGE_CLASSES[kind])
    assert event.registration().key == change.person_key
    assert type(event.registration()) is Person.Registered
    store.close()


_CHANGE_CLASSES = {
    ChangeKind.UNSUBSCRIBED: Person.Unsubscribed,
    ChangeKind.UNSUBSCRIBE_REMOVED: Person.UnsubscribeRemoved,
    ChangeKind.PERSON_LINKED: Person.PersonLinked,
}


@pytest.mark.parametrize("kind", list(ChangeKind))
def test_the_person_the_domain_holds_is_the_one_its_first_event_loads(kind: ChangeKind) -> None:
    from domain.application import _apply

    change = make_change(kind, 1, 2, "recipient", 3)
    person = Person.register(change.person_key)
    _apply(person, change)
    [first] = person.collect_events()
    assert type(first) is FIRST_CHANGES[_CHANGE_CLASSES[kind]] and first.originator_version == 1
    loaded = first.mutate(None)
    assert vars(loaded) == vars(person) and person.version == 1
    _apply(person, make_change(kind, 1, 3, "user", 4))  # a later change is a change
    [later] = person.collect_events()
    assert type(later) is _CHANGE_CLASSES[kind] and later.originator_version == 2


def state_of(person: Person) -> tuple[object, ...]:
    return (
        person.key,
        person.own,
        person.by_recipient,
        person.mailboxes,
        person.salesforce_id,
        person.salesforce_mark,
    )


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(first=changes, then=st.lists(changes, max_size=3))
def test_a_history_stored_the_older_way_loads_to_the_same_person(
    tmp_path_factory: pytest.TempPathFactory, first: Change, then: list[Change]
) -> None:
    """The older way: a `Registered` at version 1 and the change at version 2, as stored before
    first changes were one event; later changes follow either way."""
    from domain.application import _apply

    here = tmp_path_factory.mktemp("older")
    new, old = recorder(here / "new.sqlite", True), recorder(here / "old.sqlite", True)
    first = msgspec.structs.replace(first, person_key="person:p1")
    then = [msgspec.structs.replace(c, person_key="person:p1") for c in then]
    new.record([first], Tracking("changes:0", 0))
    older = Person.register(first.person_key)
    _apply(older, first)
    [one] = older.collect_events()
    # The same change, as the older code stored it: the registration, then the change.
    registration = one.registration()  # type: ignore[attr-defined]
    change = {k: v for k, v in vars(one).items() if k not in ("originator_topic", "key")}
    change["originator_version"] = 2
    as_change = _CHANGE_CLASSES[first.kind](**change)
    old.recorder.insert_events(
        [old.mapper.to_stored_event(e) for e in (registration, as_change)],
        tracking=Tracking("changes:0", 0),
        change_ids=[first.provenance.event_id],
        addresses={first.mailbox: first.email} if first.mailbox and first.email else {},
        carriers=[(first.mailbox, first.person_key)] if first.mailbox else [],
    )
    for offset, change_ in enumerate(then, start=1):
        for store in (new, old):
            store.record([change_], Tracking("changes:0", offset))
    loaded_new, loaded_old = new.person("person:p1"), old.person("person:p1")
    assert loaded_new is not None and loaded_old is not None
    assert state_of(loaded_new) == state_of(loaded_old)
    assert new.standing("person:p1")[1] == old.standing("person:p1")[1]
    assert loaded_old.version == loaded_new.version + 1
    new.close()
    old.close()


def test_a_future_time_is_capped_at_the_moment_recorded(tmp_path: Path) -> None:
    change = make_change(ChangeKind.UNSUBSCRIBED, 1, None, "recipient", 0)
    future = msgspec.structs.replace(
        change.provenance, occurred_at=datetime(2099, 1, 1, tzinfo=UTC), reason=None
    )
    store = recorder(tmp_path / "s.sqlite", True)
    store.record([Change(change.kind, change.person_key, future)], Tracking("changes:0", 0))
    event = list(store.history(change.person_key))[-1]
    assert event.occurred_at <= datetime.now(UTC)
    store.close()


def test_a_transcoder_of_another_format_is_used_as_it_is() -> None:
    from eventsourcing.persistence import DatetimeAsISO, JSONTranscoder, UUIDAsHex

    from domain.first_change import FirstChanges

    class Shouting(JSONTranscoder):
        def encode(self, obj: object) -> bytes:
            return super().encode(obj).upper()

    shouting = Shouting()
    shouting.register(UUIDAsHex())
    shouting.register(DatetimeAsISO())
    firsts = FirstChanges(shouting)
    assert not firsts.direct
    change = make_change(ChangeKind.UNSUBSCRIBED, 1, 2, "recipient", 3)
    [first] = firsts.events(change, change.provenance)
    assert first.state == first.state.upper() and b"PERSON:P1" in first.state


@pytest.mark.parametrize("direct", [False, True])
def test_a_change_the_domain_refuses_fails_alike_on_both_paths(
    tmp_path: Path, direct: bool
) -> None:
    good = make_change(ChangeKind.UNSUBSCRIBED, 1, 2, "recipient", 3)
    unnamed = msgspec.structs.replace(
        make_change(ChangeKind.UNSUBSCRIBE_REMOVED, 2, None, "user", 3),
        provenance=msgspec.structs.replace(good.provenance, event_id=uuid.uuid4(), actor_id=None),
    )
    unlinked = msgspec.structs.replace(
        make_change(ChangeKind.PERSON_LINKED, 3, None, "user", 3), salesforce_id=None
    )
    store = recorder(tmp_path / "s.sqlite", direct)
    with pytest.raises(ChangesFailed) as failed:
        store.record([good, unnamed, unlinked], Tracking("changes:0", 0))
    assert set(failed.value.failures) == {1, 2}
    assert all(isinstance(e, ValueError) for e in failed.value.failures.values())
    store.close()
    assert rows(tmp_path / "s.sqlite")["events"] == []


def reopened(path: Path, direct: bool) -> ChangeRecorder:
    """The store afresh: its persons are read from the log, not from the writer's cache."""
    return recorder(path, direct)


@pytest.mark.parametrize("kind", list(ChangeKind))
def test_a_stored_persons_one_change_is_stored_as_made(tmp_path: Path, kind: ChangeKind) -> None:
    first = make_change(ChangeKind.UNSUBSCRIBED, 1, 2, "recipient", 3)  # names a Salesforce id
    then = make_change(kind, 1, 3, "user", 4)  # and an address the person does not carry yet
    paths = {direct: tmp_path / f"{direct}.sqlite" for direct in (False, True)}
    for direct, path in paths.items():
        store = recorder(path, direct)
        store.record([first], Tracking("changes:0", 0))
        store.close()
        store = reopened(path, direct)
        batch = store.record([then], Tracking("changes:0", 1))
        assert batch.recorded == 1
        assert bool(batch.persons) is not direct  # the direct path changed no person
        store.close()
    assert rows(paths[True]) == rows(paths[False])
    [_, (_, version, topic, _)] = rows(paths[True])["events"]
    assert version == 2 and topic == get_topic(_CHANGE_CLASSES[kind])
    assert len(rows(paths[True])[CARRIERS]) == 2  # the new link is in the index
    store = reopened(paths[True], True)
    person = store.person(first.person_key)
    assert person is not None and person.version == 2
    store.close()


def snapshots(path: Path) -> list[tuple[object, ...]]:
    with sqlite3.connect(path) as db:
        return db.execute("SELECT * FROM stored_snapshots ORDER BY 1, 2").fetchall()


def test_a_change_that_is_due_a_snapshot_is_applied_to_the_person(tmp_path: Path) -> None:
    from domain.application import SNAPSHOT_EVERY

    changes = [
        make_change(ChangeKind.UNSUBSCRIBED, 1, offset % 3, "recipient", offset)
        for offset in range(SNAPSHOT_EVERY)
    ]
    paths = {direct: tmp_path / f"{direct}.sqlite" for direct in (False, True)}
    for direct, path in paths.items():
        store = recorder(path, direct)
        for offset, change in enumerate(changes):
            batch = store.record([change], Tracking("changes:0", offset))
            if direct:  # stored as made, but the snapshot's change goes through the person
                assert bool(batch.persons) is (offset == SNAPSHOT_EVERY - 1)
        store.close()
    assert rows(paths[True]) == rows(paths[False])
    [snapshot] = snapshots(paths[True])
    assert snapshot == snapshots(paths[False])[0] and snapshot[1] == SNAPSHOT_EVERY


@settings(max_examples=500, deadline=None)
@given(
    moment=st.datetimes(
        min_value=datetime(1, 1, 1), timezones=st.just(UTC) | st.none() | st.timezones()
    )
)
def test_the_fast_isoformat_writes_what_isoformat_writes(moment: datetime) -> None:
    from domain.first_change import isoformat

    assert isoformat(moment) == moment.isoformat()


def test_a_person_stored_as_made_is_remembered_in_outline_for_their_next_change(
    tmp_path: Path,
) -> None:
    first = make_change(ChangeKind.UNSUBSCRIBED, 1, 2, "recipient", 3)
    then = make_change(ChangeKind.UNSUBSCRIBE_REMOVED, 1, 3, "user", 4)  # a new address
    link = make_change(ChangeKind.PERSON_LINKED, 1, 3, "user", 5)  # needs the person itself
    paths = {direct: tmp_path / f"{direct}.sqlite" for direct in (False, True)}
    for direct, path in paths.items():
        store = recorder(path, direct)
        store.record([first], Tracking("changes:0", 0))
        batch = store.record([then], Tracking("changes:0", 1))
        if direct:  # stored as made, from the outline: the person was neither read nor built
            assert batch.outlined and not batch.persons
        batch = store.record([link], Tracking("changes:0", 2))
        assert bool(batch.persons)  # a link is applied to the person, read afresh
        store.close()
    assert rows(paths[True]) == rows(paths[False])
    assert [version for _, version, _, _ in rows(paths[True])["events"]] == [1, 2, 3]
    assert len(rows(paths[True])[CARRIERS]) == 2


def test_a_stale_outline_is_refused_by_the_store_and_the_change_recorded_afresh(
    tmp_path: Path,
) -> None:
    path = tmp_path / "s.sqlite"
    writer, other = recorder(path, True), recorder(path, True)
    writer.record([make_change(ChangeKind.UNSUBSCRIBED, 1, 2, "recipient", 3)])
    # Another writer changes the person meanwhile (a partition moved, say): the outline is stale.
    other.record([make_change(ChangeKind.UNSUBSCRIBED, 1, 3, "recipient", 2)])
    batch = writer.record([make_change(ChangeKind.UNSUBSCRIBE_REMOVED, 1, 2, "user", 1)])
    assert batch.recorded == 1 and not batch.outlined  # the second attempt read the person
    writer.close()
    other.close()
    assert [version for _, version, _, _ in rows(path)["events"]] == [1, 2, 3]
    person = recorder(path, True).person("person:p1")
    assert person is not None and person.version == 3 and len(person.mailboxes) == 2
