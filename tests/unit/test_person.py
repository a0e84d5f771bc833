"""The person aggregate's rules and the identity helpers, with no I/O."""

from __future__ import annotations

import hmac
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.identity import (
    PERSON_NAMESPACE,
    AddressKeys,
    InvalidSalesforceId,
    aggregate_id,
    normalise_email,
    normalise_salesforce_id,
    person_key,
    record_type,
    to_18,
)
from domain.person import Person, Provenance, address_state, standing

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
KEYS = AddressKeys(b"k" * 32)
ADA = KEYS.key_of("ada@example.com")


def provenance(
    source: str = "sales",
    kind: str = "recipient",
    actor_id: str | None = None,
    reason: str | None = None,
    at: datetime = T0,
) -> Provenance:
    return Provenance(uuid.uuid4(), source, kind, actor_id, None, "email_link", at, reason)


def removal(at: datetime = T0, source: str = "sales") -> Provenance:
    return provenance(source, kind="user", actor_id="admin-1", reason="asked back in", at=at)


def test_an_unsubscribe_opts_the_person_out_and_records_who_and_how() -> None:
    person = Person("person:p1")
    person.unsubscribe(provenance("marketing"), mailbox=ADA)
    assert person.opted_out
    assert person.own.unsubscribe is not None and person.own.unsubscribe.source == "marketing"
    assert person.own.unsubscribe.occurred_at == T0
    assert person.mailboxes == [ADA]
    events = person.collect_events()
    assert [type(e) for e in events] == [Person.FirstUnsubscribed]  # registered and unsubscribed
    assert events[0].source == "marketing" and events[0].mailbox == ADA
    assert "ada" not in repr(vars(events[0])), "the clear address is never in an event"


def test_repeated_unsubscribes_are_kept_for_the_audit_and_the_latest_decides() -> None:
    person = Person("person:p1")
    person.unsubscribe(provenance("sales"))
    person.unsubscribe(provenance("marketing", at=T0 + timedelta(days=1)))
    assert person.opted_out and person.own.unsubscribe is not None
    assert person.own.unsubscribe.source == "marketing"
    assert len([e for e in person.collect_events() if isinstance(e, Person.Unsubscribed)]) == 2


def test_removing_an_unsubscribe_needs_a_named_user_and_a_reason() -> None:
    person = Person("person:p1")
    person.unsubscribe(provenance())
    with pytest.raises(ValueError, match="named user"):
        person.remove_unsubscribe(provenance(kind="system", reason="cleanup"))
    with pytest.raises(ValueError, match="reason"):
        person.remove_unsubscribe(provenance(kind="user", actor_id="admin-1"))
    assert person.opted_out
    person.remove_unsubscribe(removal(T0 + timedelta(seconds=1)))
    assert not person.opted_out


def test_a_tie_goes_to_the_unsubscribe() -> None:
    person = Person("person:p1")
    person.remove_unsubscribe(removal(T0))
    person.unsubscribe(provenance(at=T0))
    assert person.opted_out


def test_a_change_dated_in_the_future_is_capped_at_the_moment_it_is_recorded() -> None:
    person = Person("person:p1")
    before = datetime.now(UTC)
    person.remove_unsubscribe(removal(datetime(2099, 1, 1, tzinfo=UTC)))
    assert person.own.removal is not None
    assert before <= person.own.removal.occurred_at <= datetime.now(UTC)
    person.unsubscribe(provenance(at=datetime.now(UTC) + timedelta(seconds=1)))
    assert person.opted_out, "a later unsubscribe wins over the capped removal"


def test_the_salesforce_link_follows_the_latest_change_that_names_one() -> None:
    person = Person("person:p1")
    lead, contact = to_18("00Q5g00000XyZaB"), to_18("0035g00000AbCdE")
    person.link(provenance(at=T0 + timedelta(hours=2)), contact)
    # A late, older unsubscribe carrying another id does not re-point the link.
    person.unsubscribe(provenance(at=T0), salesforce_id=lead)
    assert person.salesforce_id == contact
    person.unsubscribe(provenance(at=T0 + timedelta(hours=3)), salesforce_id=lead)
    assert person.salesforce_id == lead
    linked = [e for e in person.collect_events() if isinstance(e, Person.PersonLinked)]
    assert linked[0].previous_salesforce_id is None


def test_only_contacts_and_leads_can_be_linked() -> None:
    with pytest.raises(InvalidSalesforceId):
        Person("person:p1").link(provenance(), to_18("0015g00000AbCdE"))


def test_a_recipients_unsubscribe_opts_out_the_address_wherever_it_appears() -> None:
    # p-ada: the recipient unsubscribed through a link, then an admin removed it on the person.
    ada = Person("person:p-ada")
    ada.unsubscribe(provenance("marketing", kind="recipient", at=T0), mailbox=ADA)
    ada.remove_unsubscribe(removal(T0 + timedelta(hours=1)), mailbox=ADA)
    assert not ada.opted_out, "the person's own changes: removed"
    address = address_state(None, ADA, [ada])
    assert address.opted_out, "the address keeps its recipient's unsubscribe"
    answer = standing(ada, {ADA: address})
    assert answer.opted_out and ADA in answer.by_address
    # A rep's unsubscribe is the person's own: a removal on the person undoes it.
    bob = Person("person:p-bob")
    bob.unsubscribe(provenance("sales", kind="user", actor_id="rep-1", at=T0), mailbox=ADA)
    bob.remove_unsubscribe(removal(T0 + timedelta(hours=1)), mailbox=ADA)
    assert not address_state(None, ADA, [bob]).opted_out
    assert not standing(bob, {ADA: address_state(None, ADA, [bob])}).opted_out


def test_a_removal_on_the_address_itself_applies_to_the_address() -> None:
    carrier = Person("person:p-ada")
    carrier.unsubscribe(provenance(kind="recipient", at=T0), mailbox=ADA)
    address = Person(ADA)
    address.remove_unsubscribe(removal(T0 + timedelta(hours=1)), mailbox=ADA)
    assert not address_state(address, ADA, [carrier]).opted_out
    older = Person(ADA)
    older.remove_unsubscribe(removal(T0 - timedelta(hours=1)), mailbox=ADA)
    assert address_state(older, ADA, [carrier]).opted_out


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


def test_an_address_is_known_by_a_keyed_hash_never_by_the_clear_address() -> None:
    assert person_key("p-9") == "person:p-9"
    key = KEYS.key_of(" Ada@Example.com ")
    assert key == KEYS.key_of("ada@example.com") and key.startswith("email:")
    assert "example" not in key and "ada" not in key
    assert AddressKeys(b"another key of 32 bytes or more!").key_of("ada@example.com") != key
    assert "k" * 32 not in repr(KEYS)
    with pytest.raises(ValueError):
        AddressKeys(b"short")


def test_register_makes_the_same_person_as_the_constructor() -> None:
    registered, constructed = Person.register("person:p1"), Person("person:p1")
    assert registered.id == constructed.id == aggregate_id("person:p1")
    assert vars(registered).keys() == vars(constructed).keys()
    [event] = registered.collect_events()
    assert isinstance(event, Person.Registered) and event.key == "person:p1"


def _accepted(person: Person, record: str = "003000000000001AAA") -> None:
    person.push_accepted(
        record_id=record,
        object_type="Contact",
        field="HasOptedOutOfEmail",
        written_id=record,
        converted_contact_id=None,
        accepted_at=T0,
    )


def test_what_salesforce_did_never_changes_the_answer() -> None:
    person = Person("person:p1")
    person.unsubscribe(provenance(), salesforce_id="0035g00000AbCdEAAV")
    before = (person.own, person.opted_out, person.salesforce_id)
    person.push_refused(
        record_id="0035g00000AbCdEAAV",
        object_type="Contact",
        code="UNABLE_TO_LOCK_ROW",
        message="locked",
        will_retry=True,
    )
    _accepted(person, "0035g00000AbCdEAAV")
    assert (person.own, person.opted_out, person.salesforce_id) == before
    assert person.accepted_record == "0035g00000AbCdEAAV"
    subscribed = Person("person:p2")
    _accepted(subscribed)
    assert not subscribed.opted_out  # an outcome is not an unsubscribe


def test_a_waiting_reason_is_recorded_only_when_it_changes() -> None:
    from domain.person import WaitingReason

    person = Person("person:p1")
    person.unsubscribe(provenance())
    assert person.push_waiting(WaitingReason.NO_SALESFORCE_ID)
    assert not person.push_waiting(WaitingReason.NO_SALESFORCE_ID)
    assert person.push_waiting(WaitingReason.BUDGET_SPENT)
    _accepted(person)
    assert person.waiting is None
    waits = [e for e in person.collect_events() if isinstance(e, Person.PushWaiting)]
    assert [e.reason for e in waits] == ["no_salesforce_id", "budget_spent"]


def test_a_removal_makes_a_later_unsubscribe_owed_again() -> None:
    person = Person("person:p1")
    person.unsubscribe(provenance())
    _accepted(person)
    person.remove_unsubscribe(removal(T0 + timedelta(hours=1)))
    assert person.accepted_record is None and not person.opted_out


@given(key=st.text())
def test_aggregate_ids_are_uuid5_of_the_key(key: str) -> None:
    made = aggregate_id(key)
    expected = uuid.uuid5(PERSON_NAMESPACE, key)
    assert made == expected and made.version == 5 and made.variant == uuid.RFC_4122
    assert hash(made) == hash(expected) and str(made) == str(expected)
    assert made.bytes == expected.bytes and made.is_safe == expected.is_safe


@given(secret=st.binary(min_size=16, max_size=200), address=st.text())
def test_address_keys_are_hmac_sha256_of_the_normalised_address(
    secret: bytes, address: str
) -> None:
    normalised = normalise_email(address)
    expected = hmac.digest(secret, normalised.encode(), "sha256")[:16].hex()
    assert AddressKeys(secret).key_of(address) == "email:" + expected
