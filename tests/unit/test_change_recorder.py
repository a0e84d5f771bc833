"""The application service that records changes, on an in-memory SQLite store."""

from __future__ import annotations

import shutil
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from eventsourcing.persistence import IntegrityError, Tracking

from adapters.event_store import environment
from consumers import bootstrap
from domain.application import Change, ChangeBatch, ChangeKind, ChangeRecorder, refusal_of
from domain.identity import AddressKeys, aggregate_id, person_key
from domain.person import Provenance

NOW = datetime(2026, 3, 1, tzinfo=UTC)
KEYS = AddressKeys(b"k" * 32)
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def change(
    key: str = "person:p1",
    kind: ChangeKind = ChangeKind.UNSUBSCRIBED,
    *,
    email: str | None = None,
    actor_kind: str = "recipient",
    actor_id: str | None = None,
    reason: str | None = None,
    at: datetime = NOW,
    event_id: uuid.UUID | None = None,
    salesforce_id: str | None = None,
) -> Change:
    provenance = Provenance(
        event_id or uuid.uuid4(), "sales", actor_kind, actor_id, None, "manual", at, reason
    )
    mailbox = KEYS.key_of(email) if email else None
    return Change(kind, key, provenance, mailbox, email, salesforce_id)


def removal(key: str, *, email: str | None = None, at: datetime = NOW) -> Change:
    return change(
        key,
        ChangeKind.UNSUBSCRIBE_REMOVED,
        email=email,
        actor_kind="user",
        actor_id="admin",
        reason="asked",
        at=at,
    )


@pytest.fixture
def log() -> ChangeRecorder:
    return ChangeRecorder(env=environment("sqlite:///:memory:", create_table=True))


def test_a_batch_is_stored_with_its_position_and_a_redelivered_position_writes_nothing(
    log: ChangeRecorder,
) -> None:
    first, second = change("person:a"), change("person:b")
    batch = log.record([first, second], Tracking("inbound:0", 41))
    assert (batch.recorded, batch.duplicates) == (2, 0)
    assert log.position("inbound:0") == 41
    assert log.positions(["inbound:0", "inbound:1"]) == {"inbound:0": 41, "inbound:1": -1}
    with pytest.raises(IntegrityError):
        log.record([change("person:c")], Tracking("inbound:0", 41))
    assert log.person("person:c") is None
    assert len(list(log.all_changes())) == 2


def test_the_same_event_id_under_any_key_is_stored_once(log: ChangeRecorder) -> None:
    original = change("person:p-ada", email="ada@example.com")
    log.record([original], Tracking("inbound:0", 1))
    # Re-produced under the address's key, through another partition.
    again = Change(
        original.kind, KEYS.key_of("ada@example.com"), original.provenance, original.mailbox, None
    )
    batch = log.record([again, original, again], Tracking("inbound:1", 3))
    assert (batch.recorded, batch.duplicates) == (0, 3)
    assert [c.event_id for c in log.all_changes()] == [original.provenance.event_id]
    within = change("person:x")
    batch = log.record([within, within])
    assert (batch.recorded, batch.duplicates) == (1, 1)


def test_history_lists_each_change_of_a_person(log: ChangeRecorder) -> None:
    log.record(
        [
            change(),
            change(),
            change(kind=ChangeKind.PERSON_LINKED, salesforce_id="0035g00000AbCdEAAV"),
        ]
    )
    person = log.person("person:p1")
    assert person is not None and person.salesforce_id == "0035g00000AbCdEAAV"
    kinds = [type(e).__name__ for e in log.history("person:p1")]
    # A new person's first change registers them and is the change, in one event.
    assert kinds == ["FirstUnsubscribed", "Unsubscribed", "PersonLinked"]


@pytest.mark.parametrize("order", ["email first", "id first"])
@pytest.mark.parametrize("removed_on", ["person", "address"])
def test_one_mailbox_one_answer(log: ChangeRecorder, order: str, removed_on: str) -> None:
    """A marketing unsubscribe by the recipient of ada@example.com (no person id), and a sales
    unsubscribe-then-removal on person p-ada carrying ADA@example.com."""
    ada = KEYS.key_of("ada@example.com")
    by_link = change(ada, email="ada@example.com", at=NOW)
    by_rep = change(
        "person:p-ada", email="ADA@example.com".lower(), actor_kind="user", actor_id="rep-1"
    )
    removed = removal(
        "person:p-ada" if removed_on == "person" else ada,
        email="ada@example.com",
        at=NOW + timedelta(hours=1),
    )
    batches = [[by_link], [by_rep, removed]]
    for batch in batches if order == "email first" else reversed(batches):
        log.record(batch)
    person, answer = log.standing(person_key("p-ada"))
    _, address_answer = log.standing(ada)
    assert log.carriers(ada) == ["person:p-ada"]
    if removed_on == "person":
        # The recipient's own unsubscribe of the address stands wherever it appears.
        assert address_answer.opted_out and answer.opted_out
        assert person is not None and not person.own.opted_out and ada in answer.by_address
    else:
        # A deliberate removal on the address itself (later than the recipient's unsubscribe);
        # the rep's unsubscribe on the person is the person's own and stands.
        assert not address_answer.opted_out
        assert answer.opted_out and not answer.by_address


def test_the_clear_address_lives_only_in_the_erasable_index(log: ChangeRecorder) -> None:
    log.record([change("person:p-ada", email="ada@example.com")])
    ada = KEYS.key_of("ada@example.com")
    assert log.address(ada) == "ada@example.com"
    assert all(
        b"ada@example.com" not in event.state
        for event in log.recorder.select_notifications(None, 100, inclusive_of_start=True)
    )
    assert log.forget(person_key("p-ada")) == [ada]
    assert log.address(ada) is None
    assert log.standing(person_key("p-ada"))[1].opted_out, "the opt-out stays"
    # The address arrives again: recognised by its keyed hash, and not recorded again.
    log.record([change(ada, email="ada@example.com")])
    assert log.address(ada) is None and log.standing(ada)[1].opted_out
    assert log.forget(ada) == []


def test_free_text_loses_anything_shaped_like_an_address(log: ChangeRecorder) -> None:
    log.record([change(reason="ada@example.com wrote to support", actor_id="ada@example.com")])
    [event] = log.all_changes()
    assert event.reason == "<address> wrote to support" and event.actor_id == "<address>"


def test_a_person_with_ten_thousand_changes_loads_like_one_with_ten(log: ChangeRecorder) -> None:
    for start in range(0, 10_000, 500):
        log.record(
            [change("person:long", at=NOW + timedelta(seconds=start + i)) for i in range(500)]
        )
    log.record([change("person:short") for _ in range(10)])

    def load_time(key: str) -> float:
        assert log.repository.cache is None  # so each load reads the store
        started = time.perf_counter()
        for _ in range(20):
            batch = ChangeBatch([change(key)])
            log._load_persons(batch, batch.changes, [aggregate_id(key)])
            assert log._person_for(batch, key, aggregate_id(key)).version >= 10
        return time.perf_counter() - started

    # Loaded from its latest snapshot plus fewer than SNAPSHOT_EVERY events.
    histories = log.index.histories([log.person("person:long").id])  # type: ignore[union-attr]
    [events] = histories.values()
    assert len(events) <= 100 and events[0].topic.endswith("Snapshot")
    assert load_time("person:long") < 10 * load_time("person:short") + 0.05
    person = log.person("person:long")
    assert person is not None and person.version == 10_000  # the first change registers


def test_the_domain_names_what_it_would_refuse_before_anything_is_recorded() -> None:
    assert refusal_of(change(kind=ChangeKind.UNSUBSCRIBE_REMOVED, actor_kind="system")) is not None
    assert refusal_of(removal("person:p1")) is None
    assert (
        refusal_of(change(kind=ChangeKind.PERSON_LINKED))
        == "linking a person needs a Salesforce id"
    )
    assert "starts 003" in str(refusal_of(change(salesforce_id="0015g00000AbCdEAAV")))


def test_events_stored_by_version_0_1_still_load(tmp_path: Path) -> None:
    """A store written by optout-sync 0.1 (commit 1688966), committed as a fixture."""
    copy = tmp_path / "store.sqlite"
    shutil.copy(FIXTURES / "store-0.1.sqlite", copy)
    bootstrap.create_tables(f"sqlite:///{copy}")  # `init` adds what 0.2 keeps beside the log
    log = ChangeRecorder(env=environment(f"sqlite:///{copy}"))
    changes = list(log.all_changes())
    assert [type(c).__name__ for c in changes] == [
        "Unsubscribed",
        "UnsubscribeRemoved",
        "Unsubscribed",
        "PersonLinked",
        "Unsubscribed",
    ]
    assert all(c.mailbox is None and not hasattr(c, "email") for c in changes)
    p1, p2 = log.person("person:p-1"), log.person("person:p-2")
    assert p1 is not None and not p1.opted_out and p1.salesforce_id == "0035g00000AbCdEAAV"
    assert p2 is not None and p2.opted_out and p2.salesforce_id == "00Q5g00000XyZaBEAV"
    assert log.position("optout.changes.v1:0") == 4
    # And the store takes new changes after them.
    log.record([change("person:p-1", at=datetime(2026, 11, 3, tzinfo=UTC))])
    assert log.standing("person:p-1")[1].opted_out
