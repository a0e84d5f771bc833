"""The application service that records changes, on the in-memory store (no I/O)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from eventsourcing.persistence import IntegrityError, Tracking

from domain.application import Change, ChangeKind, OptOutLog, problem
from domain.person import Provenance

NOW = datetime(2026, 3, 1, tzinfo=UTC)


def change(
    key: str = "person:p1", kind: ChangeKind = ChangeKind.UNSUBSCRIBED, **kw: object
) -> Change:
    actor_kind = str(kw.pop("actor_kind", "recipient"))
    reason = kw.pop("reason", None)
    how = Provenance(
        uuid.uuid4(),
        "sales",
        actor_kind,
        kw.pop("actor_id", None),
        None,  # type: ignore[arg-type]
        "manual",
        NOW,
        reason,
    )  # type: ignore[arg-type]
    return Change(kind, key, how, **kw)  # type: ignore[arg-type]


@pytest.fixture
def log() -> OptOutLog:
    return OptOutLog(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})


def test_a_batch_is_stored_with_its_position_and_a_redelivered_position_writes_nothing(
    log: OptOutLog,
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


def test_a_re_produced_message_with_a_known_event_id_is_stored_once(log: OptOutLog) -> None:
    original = change()
    log.record([original], Tracking("inbound:0", 1))
    batch = log.record([original, original], Tracking("inbound:0", 3))
    assert (batch.recorded, batch.duplicates) == (0, 2)
    assert [c.event_id for c in log.all_changes()] == [original.how.event_id]


def test_history_lists_each_change_of_a_person(log: OptOutLog) -> None:
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
    assert kinds == ["Registered", "Unsubscribed", "Unsubscribed", "SalesforceLinked"]


def test_the_domain_names_what_it_would_refuse_before_anything_is_recorded() -> None:
    assert problem(change(kind=ChangeKind.UNSUBSCRIBE_REMOVED, actor_kind="system")) is not None
    assert (
        problem(
            change(
                kind=ChangeKind.UNSUBSCRIBE_REMOVED,
                actor_kind="user",
                actor_id="admin",
                reason="asked",
            )
        )
        is None
    )
    assert (
        problem(change(kind=ChangeKind.PERSON_LINKED)) == "linking a person needs a Salesforce id"
    )
    assert "starts 003" in str(problem(change(salesforce_id="0015g00000AbCdEAAV")))
