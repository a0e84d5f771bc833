"""The person aggregate's rules, with no I/O."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from domain.identity import (
    InvalidSalesforceId,
    aggregate_id,
    email_hash,
    normalise_salesforce_id,
    person_key,
    record_type,
    to_18,
)
from domain.person import Person, Provenance

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def how(
    source: str = "sales",
    kind: str = "recipient",
    actor_id: str | None = None,
    reason: str | None = None,
    at: datetime = T0,
) -> Provenance:
    return Provenance(uuid.uuid4(), source, kind, actor_id, None, "email_link", at, reason)


def test_an_unsubscribe_opts_the_person_out_and_records_who_and_how() -> None:
    person = Person("person:p1")
    assert person.unsubscribe(how("marketing"), email="a@example.com")
    assert person.opted_out and person.opted_out_source == "marketing"
    assert person.opted_out_at == T0
    assert person.pending_link  # no Salesforce id yet
    events = person.collect_events()
    assert [type(e) for e in events] == [Person.Registered, Person.Unsubscribed]
    assert events[1].source == "marketing" and events[1].email == "a@example.com"


def test_a_repeated_unsubscribe_is_kept_for_the_audit_but_does_not_flip_state() -> None:
    person = Person("person:p1")
    person.unsubscribe(how("sales"))
    assert person.unsubscribe(how("marketing", at=T0 + timedelta(days=1)))
    assert person.opted_out_source == "sales" and person.opted_out_at == T0
    assert len([e for e in person.collect_events() if isinstance(e, Person.Unsubscribed)]) == 2


def test_the_same_inbound_event_id_is_recorded_once() -> None:
    person = Person("person:p1")
    change = how()
    assert person.unsubscribe(change)
    assert not person.unsubscribe(change)
    assert not person.link_salesforce(change, to_18("0035g00000AbCdE"))
    assert len(person.collect_events()) == 2  # Registered + one Unsubscribed


def test_removing_an_unsubscribe_needs_a_named_user_and_a_reason() -> None:
    person = Person("person:p1")
    person.unsubscribe(how())
    with pytest.raises(ValueError, match="named user"):
        person.remove_unsubscribe(how(kind="system", reason="cleanup"))
    with pytest.raises(ValueError, match="reason"):
        person.remove_unsubscribe(how(kind="user", actor_id="admin-1"))
    assert person.opted_out
    assert person.remove_unsubscribe(how(kind="user", actor_id="admin-1", reason="asked back in"))
    assert not person.opted_out and person.opted_out_at is None


def test_linking_a_salesforce_id_ends_pending_link_and_remembers_the_previous_id() -> None:
    person = Person("person:p1")
    person.unsubscribe(how())
    lead, contact = to_18("00Q5g00000XyZaB"), to_18("0035g00000AbCdE")
    person.link_salesforce(how(), lead)
    person.link_salesforce(how(), contact)
    assert person.salesforce_id == contact and not person.pending_link
    linked = [e for e in person.collect_events() if isinstance(e, Person.SalesforceLinked)]
    assert linked[1].previous_salesforce_id == lead


def test_only_contacts_and_leads_can_be_linked() -> None:
    with pytest.raises(InvalidSalesforceId):
        Person("person:p1").link_salesforce(how(), to_18("0015g00000AbCdE"))


def test_the_18_character_id_carries_the_case_safe_checksum() -> None:
    # Known pair: Salesforce shows 001xx000003DGb2 as 001xx000003DGb2AAG.
    assert to_18("001xx000003DGb2") == "001xx000003DGb2AAG"
    assert to_18("001xx000003DGb2AAG") == "001xx000003DGb2AAG"
    assert to_18("001xx000003DGb2aag") == "001xx000003DGb2AAG"  # the suffix is case-insensitive
    with pytest.raises(InvalidSalesforceId, match="checksum"):
        to_18("001xx000003DGb2AAA")
    with pytest.raises(InvalidSalesforceId):
        to_18("003-not-an-id!!")
    assert record_type(normalise_salesforce_id("00Q5g00000XyZaB")).value == "Lead"


def test_a_person_is_their_person_id_else_their_hashed_email_never_the_clear_email() -> None:
    assert person_key("p-9", "Ada@Example.com") == "person:p-9"
    key = person_key(None, " Ada@Example.com ")
    assert key == f"email:{email_hash('ada@example.com')}"
    assert "example" not in key
    assert aggregate_id(key) == aggregate_id(person_key(None, "ada@example.com"))
    with pytest.raises(ValueError):
        person_key(None, None)


def test_register_makes_the_same_person_as_the_constructor() -> None:
    registered, constructed = Person.register("person:p1"), Person("person:p1")
    assert registered.id == constructed.id == aggregate_id("person:p1")
    assert vars(registered).keys() == vars(constructed).keys()
    [event] = registered.collect_events()
    assert isinstance(event, Person.Registered) and event.key == "person:p1"


def test_state_follows_when_changes_happened_not_when_they_arrived() -> None:
    def removal(at: datetime) -> Provenance:
        return how(kind="user", actor_id="admin-1", reason="asked back in", at=at)

    person = Person("person:p1")
    person.unsubscribe(how(at=T0))
    person.remove_unsubscribe(removal(T0 + timedelta(hours=2)))
    # An unsubscribe from before the removal arrives late, through another partition.
    assert person.unsubscribe(how("marketing", at=T0 + timedelta(hours=1)))
    assert not person.opted_out, "the removal happened after it, so it stands"
    # A new unsubscribe after the removal opts the person out again.
    person.unsubscribe(how("marketing", at=T0 + timedelta(hours=3)))
    assert person.opted_out and person.opted_out_at == T0 + timedelta(hours=3)
    # A removal from before that unsubscribe arrives late: the unsubscribe stands.
    person.remove_unsubscribe(removal(T0 + timedelta(hours=2, minutes=30)))
    assert person.opted_out
    changes = [e for e in person.collect_events() if isinstance(e, Person.Changed)]
    assert len(changes) == 5, "every change is kept for the audit"
