"""The read models' fast decode (`projections.stored`: stored state straight into small structs)
gives them exactly what the domain-event path gives (eventsourcing's mapper, then the facts of
each domain event): the same facts for every stored event, and the same rows in every read model
built both ways over one log — on SQLite and PostgreSQL, with every kind of stored event: a
registration, an unsubscribe, a removal, a link, a new person's first change of each kind (one
event that registers and changes), a first change stored the older way (a registration and the
change), the former topic name of a link, a version-1
change (no mailbox; its clear email never reaches a read model), the three push outcomes, an
input gap and an unknown topic; and over random logs (hypothesis)."""

from __future__ import annotations

import random
import shutil
import tempfile
import uuid
from datetime import timedelta
from pathlib import Path

import msgspec
from eventsourcing.persistence import StoredEvent
from eventsourcing.utils import get_topic
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.event_store import environment
from consumers import bootstrap
from consumers.read_models import MODELS, read_models
from domain.application import Change, ChangeKind, ChangeRecorder
from domain.identity import person_key
from domain.person import FIRST_CHANGES, Person, Provenance
from projections.per_person import PERSON_TOPICS
from projections.stored import Facts
from tests.integration.read_model_stream import (
    KEYS,
    NOW,
    contents,
    record_stream,
    store,
    store_url,
)

__all__ = ["store", "store_url"]
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
OLD_EMAIL = "version-one@example.com"
FORMER_LINK = "domain.person:Person.SalesforceLinked"


def add_old_shapes(store: ChangeRecorder) -> None:
    """Stored events in the shapes and topics of earlier versions, written as they were stored:
    a version-1 unsubscribe (no `mailbox`, a clear `email`), a version-1 removal, a link under
    its former topic name; a first change stored as a registration and the change; and an event
    of a topic no read model knows."""
    person = Person.register(person_key("old-shapes"))
    [registration] = person.collect_events()  # stored alone: the changes are separate events
    mailbox = KEYS.key_of(OLD_EMAIL)

    def provenance(minutes: int, actor: str = "recipient") -> Provenance:
        return Provenance(
            uuid.uuid4(), "marketing", actor, "rep-9", None, "email_link",
            NOW + timedelta(minutes=minutes), "asked" if actor == "user" else None,
        )  # fmt: skip

    person.unsubscribe(provenance(1), mailbox=mailbox, salesforce_id="0035g00000AbCdEAAV")
    person.remove_unsubscribe(provenance(2, "user"), mailbox=mailbox)
    person.link(provenance(3, "system"), "00Q5g00000AbCdEAAV")
    stored = [store.mapper.to_stored_event(e) for e in (registration, *person.collect_events())]
    registered, unsubscribed, removed, linked = stored
    stored = [registered, _version_one(unsubscribed), _version_one(removed)]
    stored.append(StoredEvent(linked.originator_id, 4, FORMER_LINK, linked.state))
    stored.append(StoredEvent(uuid.uuid4(), 1, "somewhere.else:Unknown", b'{"x":1}'))
    older = Person.register(person_key("older-first"))
    events = older.collect_events()
    older.unsubscribe(provenance(4), mailbox=KEYS.key_of("older@example.com"))
    events += older.collect_events()
    assert [type(e) for e in events] == [Person.Registered, Person.Unsubscribed]
    stored += [store.mapper.to_stored_event(e) for e in events]
    store.recorder.insert_events(stored)


FIRST_KINDS = {
    person_key("first-unsubscribed"): "Unsubscribed",
    person_key("first-removed"): "UnsubscribeRemoved",
    person_key("first-linked"): "PersonLinked",
}


def record_firsts(store: ChangeRecorder) -> None:
    """A new person's first change of each kind, each stored as one event."""

    def provenance(actor: str) -> Provenance:
        return Provenance(
            uuid.uuid4(), "sales", actor, "rep-1", "Rep <rep@example.com>", "manual", NOW,
            "asked" if actor == "user" else None,
        )  # fmt: skip

    keys = list(FIRST_KINDS)
    store.record(
        [
            Change(ChangeKind.UNSUBSCRIBED, keys[0], provenance("recipient"),
                   KEYS.key_of("first@example.com"), "first@example.com", "0035g00000AbCdEAAV"),
            Change(ChangeKind.UNSUBSCRIBE_REMOVED, keys[1], provenance("user")),
            Change(ChangeKind.PERSON_LINKED, keys[2], provenance("system"),
                   KEYS.key_of("first@example.com"), None, "00Q5g00000AbCdEAAV"),
        ]
    )  # fmt: skip
    for key in keys:
        [first] = store.history(key)  # one event: registered and changed
        assert type(first) in FIRST_CHANGES.values()


def _version_one(event: StoredEvent) -> StoredEvent:
    state = msgspec.json.decode(event.state)
    assert state.pop("class_version") == 2 and state.pop("mailbox")
    state["email"] = OLD_EMAIL  # 0.1 stored the clear address
    return StoredEvent(
        event.originator_id, event.originator_version, event.topic, msgspec.json.encode(state)
    )


def facts_both_ways(store: ChangeRecorder) -> tuple[list[object], list[object], Facts]:
    models = read_models(store)
    rows = models.follower.stored_page(0, 1_000_000, [])  # every topic, known or not
    models.close()
    fast, slow = Facts(store.mapper), Facts(store.mapper, fast=False)
    known = [row for row in rows if row[3] in PERSON_TOPICS]
    return fast(known), slow(known), fast


def rows_both_ways(store: ChangeRecorder) -> tuple[dict[str, list[tuple[object, ...]]], ...]:
    """Every read model built by the fast decode, then rebuilt by the domain-event path."""
    found = []
    for fast in (True, False):
        models = read_models(store, page=7, fast=fast)
        for projector in models.projectors.values():
            projector.rebuild()
        found.append(contents(models))
        models.close()
    return found[0], found[1]


def test_every_kind_of_stored_event_gives_the_read_models_the_same_facts_and_rows(
    store: ChangeRecorder,
) -> None:
    rnd = random.Random(15)
    record_stream(store, rnd, batches=12, size=10)  # changes of every kind, and push outcomes
    store.record_gap("inbound:0", 5, 9, "ops")
    add_old_shapes(store)
    record_firsts(store)

    fast, slow, decoder = facts_both_ways(store)
    assert fast == slow
    assert decoder.slow_reads == 0, "every known topic was read by the fast decode"
    kinds = {type(fact).__name__ for _, fact in fast}
    assert kinds == {
        "Registered", "Unsubscribed", "UnsubscribeRemoved", "PersonLinked",
        "Accepted", "Refused", "Waiting",
    }  # fmt: skip
    old = [fact for _, fact in fast if fact.person_id == Person.create_id("person:old-shapes").hex]
    assert [type(f).__name__ for f in old] == [
        "Registered", "Unsubscribed", "UnsubscribeRemoved", "PersonLinked",
    ]  # fmt: skip
    assert [getattr(f, "mailbox", None) for f in old] == [None] * 4, "version 1 named no mailbox"
    models = read_models(store)
    topics = {row[3] for row in models.follower.stored_page(0, 1_000_000, [])}
    models.close()
    assert {get_topic(first) for first in FIRST_CHANGES.values()} <= topics
    for key, kind in FIRST_KINDS.items():  # a registration and the change, at version 1
        mine = [f for _, f in fast if f.person_id == Person.create_id(key).hex]
        assert [(type(f).__name__, f.version) for f in mine] == [("Registered", 1), (kind, 1)]

    built, rebuilt = rows_both_ways(store)
    assert built == rebuilt
    assert sum(map(len, built.values())) > 100
    assert OLD_EMAIL not in repr(built), "a version-1 event's clear address reaches no read model"
    assert len(MODELS) == 3


def test_a_store_written_by_version_0_1_gives_the_same_rows_both_ways(tmp_path: Path) -> None:
    copy = tmp_path / "store.sqlite"
    shutil.copy(FIXTURES / "store-0.1.sqlite", copy)
    bootstrap.create_tables(f"sqlite:///{copy}")
    old = ChangeRecorder(env=environment(f"sqlite:///{copy}"))
    fast, slow, decoder = facts_both_ways(old)
    assert fast == slow and len(fast) > 5 and decoder.slow_reads == 0
    built, rebuilt = rows_both_ways(old)
    assert built == rebuilt
    assert "@example.com" not in repr(built)
    old.close()


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32), batches=st.integers(1, 8), size=st.integers(1, 12))
def test_random_logs_give_the_same_facts_and_rows_both_ways(
    seed: int, batches: int, size: int
) -> None:
    with tempfile.TemporaryDirectory() as directory:
        store = ChangeRecorder(
            env=environment(f"sqlite:///{directory}/events.sqlite", create_table=True)
        )
        record_stream(store, random.Random(seed), batches, size)
        fast, slow, _ = facts_both_ways(store)
        assert fast == slow
        built, rebuilt = rows_both_ways(store)
        assert built == rebuilt
        store.close()
