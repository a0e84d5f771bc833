"""The one-parse path (`adapters.inbound_fast.fast_change`) against the careful one (`decode`,
then `to_change`): on any value, it gives the same change or None, and `change_or_refusal` gives
what the careful path alone gives — the same change, or the same dead-letter code and reason."""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters import inbound
from adapters.inbound import ChangeV1, ContractError, decode
from adapters.inbound_fast import _WellFormed, fast_change
from consumers.outage import describe
from consumers.slice_writer import change_or_refusal, to_change
from domain.application import Change, ChangeKind, refusal_of
from domain.identity import AddressKeys
from tests.bad_messages import BAD_MESSAGES, BadMessage
from tests.factories import CONTACT_ID_15, LEAD_ID_18, good_message
from tests.unit.test_inbound_fuzz import json_values, mutated, mutations

KEYS = AddressKeys(b"k" * 32)
NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
SKEW = timedelta(minutes=5)
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
Outcome = Change | tuple[str, str]


def careful(value: Any, now: datetime | None = NOW) -> Outcome:
    """`change_or_refusal` as it was before the one-parse path."""
    try:
        change = to_change(decode(value, max_skew=SKEW, now=now), KEYS)
        refusal = refusal_of(change)
    except ContractError as error:
        return error.code, error.reason
    except Exception as error:
        return "domain_error", describe(error)
    return change if refusal is None else ("refused_by_domain", refusal)


def same(new: Outcome, old: Outcome) -> None:
    """Equal, and equal in every detail (a datetime's offset, a UUID's type) that == hides."""
    assert new == old
    assert repr(new) == repr(old)
    if isinstance(new, Change):
        assert isinstance(old, Change)
        assert new.provenance.occurred_at.utcoffset() == old.provenance.occurred_at.utcoffset()


def check(value: Any) -> Change | None:
    """The property; returns what the one-parse path made, if it made anything."""
    old = careful(value)
    made = fast_change(value, KEYS, SKEW, NOW)
    if made is not None:
        same(made, old)
    same(change_or_refusal(value, KEYS, SKEW, NOW), old)
    return made


# --- every kind of bad message: the careful path decides, with the same code ---------------


@pytest.mark.parametrize("bad", BAD_MESSAGES, ids=lambda bad: bad.name)
def test_a_bad_message_is_left_to_the_careful_path(bad: BadMessage) -> None:
    assert fast_change(bad.value, KEYS, SKEW, NOW) is None
    outcome = change_or_refusal(bad.value, KEYS, SKEW, NOW)
    assert outcome == careful(bad.value)
    assert isinstance(outcome, tuple) and outcome[0] == bad.code


def _text(message: dict[str, Any]) -> bytes:
    return json.dumps(message).encode()


def _raw(message: dict[str, Any]) -> bytes:
    """Without escapes: other characters than ASCII as UTF-8."""
    return json.dumps(message, ensure_ascii=False).encode()


GOOD = _text(good_message())
EVENT_ID = good_message()["event_id"]
# Edge cases: what msgspec reads but the contract refuses, what takes the careful path to be
# sure, and what both accept.
EDGES = {
    "bare-hex event id": GOOD.replace(EVENT_ID.encode(), EVENT_ID.replace("-", "").encode()),
    "a space for the T": GOOD.replace(b"01T11:30", b"01 11:30"),
    "a lower-case t": GOOD.replace(b"01T11:30", b"01t11:30"),
    "a lower-case z": GOOD.replace(b"+02:00", b"z"),
    "an offset without a colon": GOOD.replace(b"+02:00", b"+0200"),
    "an event id twice, the first bad": GOOD.replace(b"{", b'{"event_id": "x", ', 1),
    "an event id twice, the first bare hex": GOOD.replace(
        b"{", b'{"event_id": "' + EVENT_ID.replace("-", "").encode() + b'", ', 1
    ),
    "a timestamp twice, the first with a space": GOOD.replace(
        b"{", b'{"occurred_at": "2024-05-01 11:30:00Z", ', 1
    ),
    "an event id twice, the first key escaped": GOOD.replace(b"{", b'{"event\\u005fid": 7, ', 1),
    "an escaped key alone": GOOD.replace(b'"event_id"', b'"event\\u005fid"'),
    "an escaped character in the event id": GOOD.replace(b'"7d3f', b'"\\u0037d3f'),
    "an event id as a number": GOOD.replace(f'"{EVENT_ID}"'.encode(), b"7"),
    "the 31st of February": GOOD.replace(b"2024-05-01T", b"2024-02-31T"),
    "the last representable instant and more": GOOD.replace(
        b"2024-05-01T11:30:00+02:00", b"9999-12-31T23:59:59.9999999Z"
    ),
    "an hour in the future": _text(good_message(occurred_at="2026-11-30T13:00:00Z")),
    "a bytearray": bytearray(GOOD),
    "a memoryview": memoryview(GOOD),
    "the key in an unknown field's value": GOOD.replace(b"{", b'{"note": "occurred_at", ', 1),
    "a person twice, the first with a DEL": GOOD.replace(
        b"{", b'{"person": {"person_id": "p\x7f"}, ', 1
    ),
    "a person id twice, the first with a DEL": GOOD.replace(
        b'{"person_id"', b'{"person_id": "p\x7f", "person_id"'
    ),
    "an email twice, the first without an at-sign": GOOD.replace(
        b'"email"', b'"email": "nobody", "email"'
    ),
    "a Salesforce id twice, the first a Lead of 16": GOOD.replace(
        b'"salesforce_id"', b'"salesforce_id": "00Q5g00000XyZaBE", "salesforce_id"'
    ),
    "a person id with a DEL": _text(good_message(person={"person_id": "p-1\x7f"})),
    "a person id with a C1 control": _raw(good_message(person={"person_id": "p-1\x85"})),
    "an email with a zero-width space": _raw(good_message(person={"email": "a\u200b@b.c"})),
    "an email with two at-signs": _text(good_message(person={"email": "a@b@c"})),
    "an email with a space inside": _text(good_message(person={"email": "a b@c"})),
    "a Salesforce id of 16": _text(
        good_message(person={"person_id": "p", "salesforce_id": "0035g00000AbCdEA"})
    ),
    "an Account id": _text(
        good_message(person={"person_id": "p", "salesforce_id": "0015g00000AbCdE"})
    ),
}
BOTH = {
    "seven fractional digits, rounded": GOOD.replace(b"11:30:00+", b"11:30:00.1234565+"),
    "upper-case hex": GOOD.replace(EVENT_ID.encode(), EVENT_ID.upper().encode()),
    "no spaces, other order": json.dumps(dict(reversed(good_message().items()))).encode(),
    "an unknown nested field": _text(good_message(extra={"event": [1, {"id": None}]})),
}


@pytest.mark.parametrize("name", list(EDGES))
def test_an_edge_case_takes_the_careful_path(name: str) -> None:
    value = EDGES[name]
    assert fast_change(value, KEYS, SKEW, NOW) is None
    check(value)


@pytest.mark.parametrize("name", list(BOTH))
def test_an_edge_case_both_accept_takes_the_one_parse(name: str) -> None:
    assert check(BOTH[name]) is not None


def test_the_ones_the_contract_refuses_keep_their_codes() -> None:
    codes = {
        name: outcome[0]
        for name, value in EDGES.items()
        if isinstance(outcome := change_or_refusal(value, KEYS, SKEW, NOW), tuple)
    }
    assert codes["bare-hex event id"] == "invalid_uuid"
    assert codes["a space for the T"] == codes["an offset without a colon"] == "bad_timestamp"
    assert codes["an event id twice, the first bad"] == "invalid_uuid"
    assert codes["an hour in the future"] == "future_timestamp"
    assert "an escaped character in the event id" not in codes  # the contract accepts it


def test_an_event_id_of_36_characters_is_one_msgspec_reads_only_as_8_4_4_4_12() -> None:
    """The one-parse path trusts msgspec for the 36-character form: every one-character change
    of a valid id (any ASCII character anywhere) that msgspec still reads matches the contract."""
    decoder = msgspec.json.Decoder(uuid.UUID)
    pattern = re.compile(inbound._UUID_PATTERN)
    for at in range(36):
        for code in range(32, 127):
            text = EVENT_ID[:at] + chr(code) + EVENT_ID[at + 1 :]
            try:
                decoder.decode(json.dumps(text).encode())
            except msgspec.ValidationError:
                continue
            assert pattern.search(text), text


def test_the_one_parse_struct_is_the_contract_field_for_field() -> None:
    wire = {f.name: f for f in msgspec.structs.fields(_WellFormed)}
    contract = {f.name: f for f in msgspec.structs.fields(ChangeV1)}
    assert list(wire) == list(contract)
    for name, field in contract.items():
        expected = msgspec.Raw if name in ("event_id", "occurred_at") else field.type
        assert (wire[name].type, wire[name].default) == (expected, field.default), name


# --- well-formed messages of every kind: one parse, the same change --------------------------

# Mostly valid texts, and now and then a control or invisible character, or a second at-sign.
_ids = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1)
_local = st.text("abcXYZ019._+-é", min_size=1, max_size=12) | st.text(
    " @\x7f\x85\u200b\ufeffé", max_size=3
)
_emails = st.builds(
    lambda spaces, local, domain, tail: " " * spaces + f"{local}@{domain}" + " " * tail,
    st.integers(0, 2),
    _local,
    _local,
    st.integers(0, 2),
)
_offsets = st.sampled_from(["Z", "+00:00", "-00:00", "+02:00", "-05:30", "+14:00"])


@st.composite
def _timestamps(draw: st.DrawFn) -> str:
    moment = NOW + timedelta(seconds=draw(st.integers(-(10**9), 600)))
    offset = draw(_offsets)
    hours, minutes = (0, 0) if offset == "Z" else (int(offset[1:3]), int(offset[4:6]))
    sign = -1 if offset.startswith("-") else 1
    local = moment + sign * timedelta(hours=hours, minutes=minutes)
    fraction = draw(st.sampled_from(["", ".5", ".123", ".123456", ".1234567", ".0000001"]))
    return local.strftime("%Y-%m-%dT%H:%M:%S") + fraction + offset


@st.composite
def _messages(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(list(ChangeKind)))
    person: dict[str, Any] = {}
    if draw(st.booleans()):
        person["person_id"] = draw(_ids | st.just(""))
    if draw(st.booleans()) or not person.get("person_id"):
        person["email"] = draw(_emails)
    if draw(st.booleans()):
        person["salesforce_id"] = draw(
            st.sampled_from([CONTACT_ID_15, LEAD_ID_18, LEAD_ID_18.lower(), "0015g00000AbCdE"])
        )
    actor: dict[str, Any] = {"kind": draw(st.sampled_from(["recipient", "user", "system"]))}
    for field in ("id", "name"):
        if draw(st.booleans()):
            actor[field] = draw(_ids | st.none())
    message = good_message(
        event_id=str(draw(st.uuids())),
        type=kind.value,
        person=person,
        source=draw(st.sampled_from(["sales", "marketing", "salesforce"])),
        actor=actor,
        channel=draw(st.sampled_from(["email_link", "manual", "api", "sync"])),
        reason=draw(st.none() | st.sampled_from(["", " ", "re-consented", "\u200b"]) | _ids),
        occurred_at=draw(_timestamps()),
    )
    if draw(st.booleans()):
        message["event_id"] = message["event_id"].upper()
    if draw(st.booleans()):
        message["extra"] = draw(json_values)
    keys = draw(st.permutations(list(message)))
    return {key: message[key] for key in keys}


@FUZZ
@given(_messages(), st.booleans())
def test_a_message_of_any_kind_gives_the_same_outcome(message: dict[str, Any], ascii: bool) -> None:
    value = json.dumps(message, ensure_ascii=ascii).encode()
    made = check(value)
    if b"\\" not in value and isinstance(careful(value), Change):
        assert made is not None, "a plainly well-formed message takes the one parse"


@FUZZ
@given(_messages(), mutations(max_size=3))
def test_a_broken_message_gives_the_same_outcome(
    message: dict[str, Any], edits: list[tuple[tuple[str, ...], str, Any]]
) -> None:
    check(mutated(message, edits, ensure_ascii=False))


@FUZZ
@given(st.binary(max_size=64), st.integers(min_value=0, max_value=400))
def test_bytes_spliced_into_a_message_give_the_same_outcome(junk: bytes, at: int) -> None:
    check(GOOD[:at] + junk + GOOD[at:])


@FUZZ
@given(st.binary(max_size=400))
def test_any_bytes_give_the_same_outcome(value: bytes) -> None:
    check(value)


def test_without_a_clock_given_both_read_the_current_time() -> None:
    value = _text(good_message(occurred_at=(datetime.now(UTC) + timedelta(minutes=4)).isoformat()))
    made = fast_change(value, KEYS, SKEW)
    assert made is not None
    same(made, careful(value, now=None))
    late = _text(good_message(occurred_at=(datetime.now(UTC) + timedelta(minutes=6)).isoformat()))
    assert fast_change(late, KEYS, SKEW) is None
    assert change_or_refusal(late, KEYS, SKEW)[0] == "future_timestamp"  # type: ignore[index]
