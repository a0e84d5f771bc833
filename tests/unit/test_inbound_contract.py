"""The inbound contract: good changes decode and normalise; every bad kind gets its code."""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import msgspec
import pytest

from adapters.inbound import (
    CODES,
    DEFAULT_MAX_SKEW,
    Actor,
    ChangeV1,
    ContractError,
    PersonRef,
    decode,
    encode,
    json_schema,
    kafka_key,
    schema_text,
)
from consumers.ingest import DEAD_LETTER_CODES, to_change
from domain.application import ChangeKind
from domain.identity import AddressKeys
from tests.bad_messages import BAD_MESSAGES, BadMessage
from tests.factories import (
    CONTACT_ID_18,
    EMAIL,
    LEAD_ID_18,
    good_change,
    good_message,
)

ROOT = Path(__file__).resolve().parents[2]
USER = {"kind": "user", "id": "u-42", "name": "Grace Hopper"}


def _decode(message: dict[str, object]) -> ChangeV1:
    return decode(json.dumps(message).encode())


# --- good messages ---------------------------------------------------------------------------


def test_an_unsubscribe_decodes_and_normalises() -> None:
    person = {"person_id": None, "email": "  Ada.Lovelace@Example.COM ", "salesforce_id": None}
    change = _decode(good_message(person=person))

    assert change.event_id == uuid.UUID("7d3f2b9e-0c1a-4f5e-9b8d-2a6c4e1f0b37")
    assert change.type == "unsubscribed"
    assert change.person.email == "ada.lovelace@example.com"
    assert change.occurred_at == datetime(2024, 5, 1, 9, 30, tzinfo=UTC)
    assert change.occurred_at.utcoffset() == timedelta(hours=2)  # the producer's offset is kept


def test_a_15_character_salesforce_id_becomes_18() -> None:
    assert _decode(good_message()).person.salesforce_id == CONTACT_ID_18


def test_an_18_character_id_with_a_lower_case_checksum_is_accepted() -> None:
    person = {"person_id": "p-1", "salesforce_id": CONTACT_ID_18[:15] + "aav"}
    assert _decode(good_message(person=person)).person.salesforce_id == CONTACT_ID_18


def test_a_removal_by_a_named_user_with_a_reason_decodes() -> None:
    change = _decode(
        good_message(type="unsubscribe_removed", actor=USER, channel="manual", reason="consented")
    )
    assert change.type == "unsubscribe_removed"
    assert change.actor == Actor(kind="user", id="u-42", name="Grace Hopper")
    assert change.reason == "consented"


def test_a_link_decodes_with_a_lead_id() -> None:
    person = {"person_id": "p-1001", "salesforce_id": LEAD_ID_18}
    change = _decode(
        good_message(type="person_linked", person=person, source="salesforce", channel="sync")
    )
    assert change.person == PersonRef(person_id="p-1001", salesforce_id=LEAD_ID_18)


def test_a_marketing_bounce_by_a_system_decodes() -> None:
    message = good_message(
        source="marketing", channel="bounce", actor={"kind": "system", "name": "Marketo"}
    )
    assert _decode(message).actor == Actor(kind="system", name="Marketo")


def test_unknown_fields_are_ignored_so_producers_can_add_fields() -> None:
    message = good_message(campaign={"id": 7}, person={"email": EMAIL, "phone": "+1 555"})
    assert _decode(message).person == PersonRef(email=EMAIL)


def test_optional_fields_may_be_left_out() -> None:
    message = good_message(person={"person_id": "p-1"}, actor={"kind": "recipient"})
    del message["reason"]
    change = _decode(message)
    assert change.reason is None
    assert change.person == PersonRef(person_id="p-1")


def test_a_bytearray_or_memoryview_value_decodes_like_bytes() -> None:
    value = json.dumps(good_message()).encode()
    assert decode(bytearray(value)) == decode(memoryview(value)) == decode(value)


def test_encode_then_decode_is_the_identity() -> None:
    change = good_change(
        occurred_at=datetime(2024, 5, 1, 9, 30, tzinfo=timezone(timedelta(hours=-7)))
    )
    assert decode(encode(change)) == change


def test_the_wire_form_carries_an_offset() -> None:
    assert json.loads(encode(good_change()))["occurred_at"] == "2024-05-01T09:30:00Z"


def test_the_kafka_key_is_the_hashed_person_key() -> None:
    change = good_change()
    expected = hashlib.sha256(b"person:p-1001").hexdigest().encode()
    assert kafka_key(change) == expected
    assert kafka_key(good_change(reason="other")) == expected  # stable for the same person


def test_without_a_person_id_the_key_is_derived_from_the_email_but_does_not_contain_it() -> None:
    upper = _decode(good_message(person={"email": "ADA.Lovelace@example.com"}))
    lower = good_change(person=PersonRef(email=EMAIL))

    assert kafka_key(upper) == kafka_key(lower)
    assert re.fullmatch(rb"[0-9a-f]{64}", kafka_key(lower))
    assert b"ada" not in kafka_key(lower)
    routing = "email:" + hashlib.sha256(EMAIL.encode()).hexdigest()
    assert kafka_key(lower) == hashlib.sha256(routing.encode()).hexdigest().encode()


def test_a_change_is_immutable() -> None:
    with pytest.raises(AttributeError):
        good_change().reason = "changed"  # type: ignore[misc]


def test_an_upper_case_uuid_is_accepted() -> None:
    change = _decode(good_message(event_id="7D3F2B9E-0C1A-4F5E-9B8D-2A6C4E1F0B37"))
    assert change.event_id == uuid.UUID("7d3f2b9e-0c1a-4f5e-9b8d-2a6c4e1f0b37")


# --- the clock skew --------------------------------------------------------------------------

NOW = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)


def _at(when: datetime, max_skew: timedelta = DEFAULT_MAX_SKEW) -> ChangeV1:
    value = json.dumps(good_message(occurred_at=when.isoformat())).encode()
    return decode(value, now=NOW, max_skew=max_skew)


def test_a_time_within_the_skew_is_accepted_unchanged() -> None:
    for ahead in (timedelta(0), timedelta(minutes=4, seconds=59), timedelta(minutes=5)):
        assert _at(NOW + ahead).occurred_at == NOW + ahead  # the domain decides what to do


def test_a_time_beyond_the_skew_is_refused_naming_the_field_and_the_skew() -> None:
    late = NOW + timedelta(minutes=5, microseconds=1)
    with pytest.raises(ContractError) as refused:
        _at(late)
    assert refused.value.code == "future_timestamp"
    assert refused.value.reason == (
        "$.occurred_at: more than 300 seconds in the future (the allowed clock skew)"
    )
    assert "2024" not in refused.value.reason  # never the value


def test_the_skew_is_a_parameter_and_offsets_are_compared_as_instants() -> None:
    in_paris = timezone(timedelta(hours=2))
    ahead = _at(NOW.astimezone(in_paris) + timedelta(seconds=50), max_skew=timedelta(minutes=1))
    assert ahead.occurred_at == NOW + timedelta(seconds=50)
    with pytest.raises(ContractError, match="more than 30 seconds") as refused:
        _at(NOW.astimezone(in_paris) + timedelta(seconds=50), max_skew=timedelta(seconds=30))
    assert refused.value.code == "future_timestamp"


def test_without_a_given_now_the_clock_is_read() -> None:
    soon = datetime.now(UTC) + timedelta(minutes=1)
    later = datetime.now(UTC) + timedelta(hours=1)
    assert (
        decode(json.dumps(good_message(occurred_at=soon.isoformat())).encode()).occurred_at == soon
    )
    with pytest.raises(ContractError) as refused:
        decode(json.dumps(good_message(occurred_at=later.isoformat())).encode())
    assert refused.value.code == "future_timestamp"


# --- bad messages ----------------------------------------------------------------------------


@pytest.mark.parametrize("bad", BAD_MESSAGES, ids=[bad.name for bad in BAD_MESSAGES])
def test_a_bad_message_is_refused_with_its_code(bad: BadMessage) -> None:
    with pytest.raises(ContractError) as refused:
        decode(bad.value)

    assert refused.value.code == bad.code
    reason = refused.value.reason
    assert re.match(r"^\$[.\w]*: \S", reason), reason  # names the field, then says why
    assert "\n" not in reason and len(reason) < 200
    assert "@" not in reason and "ada" not in reason.lower()  # never the email


def test_the_catalogue_covers_many_kinds_and_only_known_codes() -> None:
    codes = {bad.code for bad in BAD_MESSAGES}
    assert codes <= CODES
    assert len(codes) >= 15
    assert CODES - codes == {"not_bytes", "invalid_value"}  # unreachable from bytes on the wire


def test_the_size_is_checked_before_anything_is_parsed() -> None:
    with pytest.raises(ContractError) as refused:
        decode(b"\xff" * 101, max_bytes=100)
    assert refused.value.code == "oversized"


def test_a_message_exactly_at_the_limit_is_accepted() -> None:
    value = json.dumps(good_message()).encode()
    assert decode(value, max_bytes=len(value)).type == "unsubscribed"


def test_a_value_that_is_not_bytes_is_refused() -> None:
    with pytest.raises(ContractError) as refused:
        decode("{}")  # type: ignore[arg-type]
    assert refused.value.code == "not_bytes"


def test_the_error_string_carries_code_and_reason() -> None:
    error = ContractError("invalid_email", "$.person.email: bad")
    assert str(error) == "invalid_email: $.person.email: bad"
    assert isinstance(error, ValueError)


# --- schema and documentation ----------------------------------------------------------------


def test_the_published_schema_is_the_generated_one() -> None:
    published = ROOT / "docs/schema/inbound-change-v1.schema.json"
    assert published.read_text(encoding="utf-8") == schema_text(), (
        "regenerate: python -m adapters.inbound schema > docs/schema/inbound-change-v1.schema.json"
    )
    assert json.loads(published.read_text(encoding="utf-8")) == json_schema()


def test_the_schema_describes_version_1() -> None:
    schema = json_schema()
    change = schema["$defs"]["ChangeV1"]
    assert schema["title"] and schema["description"]
    assert change["properties"]["schema_version"] == {"type": "integer", "enum": [1]}
    assert set(change["required"]) >= {"event_id", "type", "person", "occurred_at"}
    assert "reason" not in change["required"]


def test_the_documentation_lists_every_code() -> None:
    document = (ROOT / "docs/inbound-contract.md").read_text(encoding="utf-8")
    codes = sorted(CODES | set(DEAD_LETTER_CODES))
    assert [code for code in codes if f"`{code}`" not in document] == []
    assert not CODES & set(DEAD_LETTER_CODES), "one meaning per code"


def test_the_wire_and_the_domain_have_one_list_of_change_types() -> None:
    assert sorted(json_schema()["$defs"]["ChangeKind"]["enum"]) == sorted(ChangeKind)
    needs = {
        ChangeKind.UNSUBSCRIBED: {},
        ChangeKind.UNSUBSCRIBE_REMOVED: {"actor": USER, "reason": "re-consented"},
        ChangeKind.PERSON_LINKED: {},
    }
    assert set(needs) == set(ChangeKind)
    for kind, fields in needs.items():
        message = decode(json.dumps(good_message(type=kind.value, **fields)).encode())
        assert to_change(message, AddressKeys(b"k" * 32)).kind is kind
    with pytest.raises(ContractError) as refused:
        decode(json.dumps(good_message(type="resubscribed")).encode())
    assert refused.value.code == "unknown_type"
    assert ", ".join(ChangeKind) in refused.value.reason


def test_the_documented_sample_message_decodes() -> None:
    document = (ROOT / "docs/inbound-contract.md").read_text(encoding="utf-8")
    samples = re.findall(r"```json\n(.*?)```", document, re.DOTALL)
    assert samples
    for sample in samples:
        assert isinstance(decode(sample.encode()), ChangeV1)


def test_the_factory_builds_a_valid_normalised_change() -> None:
    change = good_change()
    assert decode(msgspec.json.encode(change)) == change
    assert good_change().event_id != change.event_id  # a fresh idempotency key each time
    assert change.person.salesforce_id == CONTACT_ID_18  # already in the 18-character form
