"""The published inbound schema is the consumer's contract: a validator and `decode` agree.

The corpus is built from the contract's own sample messages: every field removed, set to null
and mistyped, each string at and beyond its bounds, each pattern's edge cases, and each rule
across fields. The two disagree only where `docs/inbound-contract.md` lists a rule that a JSON
Schema cannot state.
"""

from __future__ import annotations

import copy
import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from adapters.inbound import CODES, MAX_BYTES, ContractError, decode, json_schema
from tests.unit.schema_agreement import (
    Case,
    disagreements,
    keyword_values,
    pattern_disagreements,
    strict_validator,
    strings_in,
    unstated_rules,
)

ROOT = Path(__file__).resolve().parents[2]
CONTRACT = ROOT / "docs/inbound-contract.md"
NOW = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)  # after the samples' dates
DROP = object()


def _samples() -> list[dict[str, Any]]:
    blocks = re.findall(r"```json\n(.*?)```", CONTRACT.read_text(encoding="utf-8"), re.DOTALL)
    return [json.loads(block) for block in blocks]


SAMPLE, REMOVAL = _samples()[:2]  # an unsubscribe by the recipient; a removal by a named user
assert SAMPLE["type"] == "unsubscribed" and REMOVAL["type"] == "unsubscribe_removed"
LINK = {
    **SAMPLE,
    "type": "person_linked",
    "source": "salesforce",
    "channel": "sync",
    "actor": {"kind": "system", "name": "nightly pass"},
}


def _with(base: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A copy of `base` with the field at the dotted `path` set to `value` (or dropped)."""
    message = copy.deepcopy(base)
    *parents, leaf = path.split(".")
    target = message
    for parent in parents:
        target = target[parent]
    if value is DROP:
        target.pop(leaf, None)
    else:
        target[leaf] = value
    return message


def _paths(message: dict[str, Any], prefix: str = "") -> list[str]:
    paths = []
    for key, value in message.items():
        paths.append(prefix + key)
        if isinstance(value, dict):
            paths += _paths(value, f"{prefix}{key}.")
    return paths


MISTYPES: dict[str, Any] = {
    "null": None,
    "a number": 12345,
    "a fraction": 1.5,
    "a boolean": True,
    "a string": "text",
    "an array": [],
    "an object": {},
}


def _shapes() -> list[Case]:
    """Every field of each sample removed and replaced by each JSON type."""
    cases = []
    for label, base in (("sample", SAMPLE), ("removal", REMOVAL), ("link", LINK)):
        cases.append(Case(f"{label} as published", base, expect=True))
        for path in _paths(base):
            cases.append(Case(f"{label}: {path} removed", _with(base, path, DROP)))
            for kind, value in MISTYPES.items():
                cases.append(Case(f"{label}: {path} {kind}", _with(base, path, value)))
    return cases


def _person(label: str, expect: bool | None = None, **fields: Any) -> Case:
    return Case(label, _with(SAMPLE, "person", {**SAMPLE["person"], **fields}), expect=expect)


def _field(label: str, path: str, value: Any, expect: bool | None = None, **more: Any) -> Case:
    return Case(label, _with(SAMPLE, path, value), expect=expect, **more)


def _bounds() -> list[Case]:
    """Each bounded string empty, at one character, at and beyond its maximum length."""
    cases = []
    for path, longest in (
        ("person.person_id", 255),
        ("actor.id", 255),
        ("actor.name", 255),
        ("reason", 2000),
    ):
        for length in (0, 1, longest, longest + 1):
            cases.append(_field(f"{path} of {length} characters", path, "x" * length))
    domain = "@example.com"
    for length in (320, 321):
        email = "a" * (length - len(domain)) + domain
        cases.append(_person(f"email of {length} characters", expect=length == 320, email=email))
    return cases


ISSUE_DISAGREEMENTS = [  # the 15 messages of issue 10; both sides now refuse each
    _field("schema_version 1.0 (issue)", "schema_version", 1.0, unstated="integer_literal"),
    _person("email @b.com (issue)", expect=False, email="@b.com"),
    _person("email a@ (issue)", expect=False, email="a@"),
    _person("email a b@c.com (issue)", expect=False, email="a b@c.com"),
    _person("email a@@b.com (issue)", expect=False, email="a@@b.com"),
    _person("Account id 001 (issue)", expect=False, salesforce_id="0015g00000AbCdE"),
    _person("16-character id (issue)", expect=False, salesforce_id="0035g00000AbCdEA"),
    _person("empty Salesforce id (issue)", expect=False, salesforce_id=""),
    _person("person_id with NUL (issue)", expect=False, person_id="p\x00-1"),
    _field(
        "person with no identity (issue)", "person", {"salesforce_id": "0035g00000AbCdE"}, False
    ),
    Case("removal without reason (issue)", _with(REMOVAL, "reason", DROP), expect=False),
    Case(
        "removal by an unnamed user (issue)",
        _with(REMOVAL, "actor", {"kind": "user", "name": "Grace"}),
        expect=False,
    ),
    Case(
        "link without Salesforce id (issue)",
        _with(LINK, "person.salesforce_id", DROP),
        expect=False,
    ),
    _field("UUID without hyphens (issue)", "event_id", "7d3f2b9e0c1a4f5e9b8d2a6c4e1f0b37", False),
    _field("timestamp with a space (issue)", "occurred_at", "2024-05-01 11:30:00+02:00", False),
]


def _values() -> list[Case]:
    """Each pattern's and each closed set's edge cases."""
    person: list[tuple[str, dict[str, Any], bool | None]] = [
        ("email only", {"email": "ada@example.com"}, True),
        ("person_id only", {"person_id": "p-1"}, True),
        ("email, null person_id", {"person_id": None, "email": "ada@example.com"}, True),
        ("person_id, null email", {"person_id": "p-1", "email": None}, True),
        ("both null", {"person_id": None, "email": None}, False),
        ("empty person", {}, False),
        ("unknown person field only", {"phone": "+1 555"}, False),
    ]
    cases = [_field(f"person: {label}", "person", value, expect) for label, value, expect in person]
    emails: list[tuple[str, bool | None]] = [
        ("a@b", True),
        ("zoë@exämple.com", True),
        ("ada+tag@example.com", True),
        ("  ada@example.com  ", True),
        ("", False),
        ("   ", False),
        ("@", False),
        ("ada.example.com", False),
        ("ada@example.com\n", False),
        ("\tada@example.com", False),
        ("ada@exa mple.com", False),
        ("ada\xa0@example.com", False),
        ("ada\u200b@example.com", False),
        ("ada\ufeff@example.com", False),
        ("ada@example.com\u3000", False),
        ("ada\x85@example.com", False),
    ]
    cases += [_person(f"email {email!r}", expect=expect, email=email) for email, expect in emails]
    cases.append(
        Case(
            "email in capitals with spaces around",
            _with(SAMPLE, "person.email", " ADA.Lovelace@Example.COM "),
            unstated="email_normalisation",
        )
    )
    salesforce_ids: list[tuple[str, str, bool | None]] = [
        ("Contact, 15", "0035g00000AbCdE", True),
        ("Contact, 18", "0035g00000AbCdEAAV", True),
        ("Contact, 18, lower-case checksum", "0035g00000AbCdEaav", True),
        ("Lead, 18", "00Q5g00000XyZaBEAV", True),
        ("14 characters", "0035g00000AbCd", False),
        ("17 characters", "0035g00000AbCdEAA", False),
        ("19 characters", "0035g00000AbCdEAAVX", False),
        ("lower-case Lead prefix", "00q5g00000XyZaB", False),
        ("a hyphen", "003-not-an-id00", False),
        ("a trailing newline", "0035g00000AbCdE\n", False),
        ("full-width digits", "\uff10\uff10\uff135g00000AbCdE", False),
    ]
    cases += [
        _person(f"Salesforce id: {label}", expect=expect, salesforce_id=value)
        for label, value, expect in salesforce_ids
    ]
    cases.append(
        Case(
            "Salesforce id with a wrong checksum",
            _with(SAMPLE, "person.salesforce_id", "0035g00000AbCdEZZZ"),
            unstated="salesforce_id_checksum",
        )
    )
    for path in ("person.person_id", "actor.id", "actor.name"):
        for text, expect in (
            ("p-1\n", False),
            ("p\t1", False),
            ("p\x7f1", False),
            ("p\x9f1", False),
            ("   ", True),
            ("Zoë Ådahl 😀", True),
            ("p\u2028", True),
        ):
            cases.append(_field(f"{path} {text!r}", path, text, expect))
    event_ids: list[tuple[str, bool | None]] = [
        ("7D3F2B9E-0C1A-4F5E-9B8D-2A6C4E1F0B37", True),
        ("00000000-0000-0000-0000-000000000000", True),
        ("{7d3f2b9e-0c1a-4f5e-9b8d-2a6c4e1f0b37}", False),
        ("urn:uuid:7d3f2b9e-0c1a-4f5e-9b8d-2a6c4e1f0b37", False),
        ("7d3f2b9e-0c1a-4f5e-9b8d-2a6c4e1f0b3", False),
        ("7d3f2b9e-0c1a-4f5e-9b8d-2a6c4e1f0b37\n", False),
        ("7d3f2b9e-0c1a4f5e-9b8d-2a6c4e1f0b37", False),
        ("", False),
    ]
    cases += [_field(f"event_id {value!r}", "event_id", value, e) for value, e in event_ids]
    timestamps: list[tuple[str, bool | None]] = [
        ("2024-05-01T09:30:00Z", True),
        ("2024-05-01T09:30:00.5Z", True),
        ("2024-05-01T09:30:00.123456789-07:00", True),
        ("2024-05-01T09:30:00-00:00", True),
        ("2024-05-01T09:30:00+23:59", True),
        ("2024-02-29T09:30:00Z", True),
        ("0001-01-01T00:00:00+01:00", True),
        ("2024-05-01t09:30:00Z", False),
        ("2024-05-01T09:30:00z", False),
        ("2024-05-01T09:30:00+0200", False),
        ("2024-05-01T09:30:00+02", False),
        ("2024-05-01T09:30Z", False),
        ("2024-05-01T09:30:00.Z", False),
        ("2024-05-01T09:30:00,5Z", False),
        ("2024-05-01T09:30:00", False),
        ("2024-02-30T09:30:00Z", False),
        ("2023-02-29T09:30:00Z", False),
        ("2024-05-01T23:59:60Z", False),
        ("2024-05-01T24:00:00Z", False),
        ("2024-05-01T09:30:00+24:00", False),
        ("0000-01-01T00:00:00Z", False),
        ("20240501T093000Z", False),
        ("2024-05-01T09:30:00Z\n", False),
        (" 2024-05-01T09:30:00Z", False),
        ((NOW + timedelta(minutes=4, seconds=59)).isoformat(), True),
        ((NOW + timedelta(minutes=5)).isoformat(), True),
    ]
    cases += [_field(f"occurred_at {value!r}", "occurred_at", value, e) for value, e in timestamps]
    for late in (NOW + timedelta(minutes=5, microseconds=1), datetime(9999, 12, 31, tzinfo=UTC)):
        cases.append(
            _field(
                f"occurred_at {late}", "occurred_at", late.isoformat(), unstated="future_timestamp"
            )
        )
    for path, allowed in (
        ("type", ["unsubscribed", "unsubscribe_removed", "person_linked"]),
        ("source", ["sales", "marketing", "salesforce"]),
        ("actor.kind", ["recipient", "user", "system"]),
        ("channel", ["email_link", "manual", "import", "bounce", "complaint", "api", "sync"]),
    ):
        for value in [*allowed, "Unsubscribed", "sales ", "carrier_pigeon", ""]:
            cases.append(_field(f"{path} {value!r}", path, value))
    for version in (1, 0, 2, -1, "1", 10**30):
        cases.append(_field(f"schema_version {version!r}", "schema_version", version, version == 1))
    wire = json.dumps(SAMPLE).replace('"schema_version": 1', '"schema_version": 1E0').encode()
    cases.append(Case("schema_version 1E0", SAMPLE, unstated="integer_literal", wire=wire))
    return cases


def _removal(label: str, expect: bool, **fields: Any) -> Case:
    return Case(f"removal: {label}", {**REMOVAL, **fields}, expect=expect)


def _across_fields() -> list[Case]:
    """What a removal and a link require, and that other types do not require it."""
    user = REMOVAL["actor"]
    return [
        _removal("reason empty", False, reason=""),
        _removal("reason blank", False, reason="   "),
        _removal("reason of controls and invisible spaces", False, reason="\t\n\u3000\u200b\ufeff"),
        _removal("reason of one visible character", True, reason=" \u00a0x"),
        _removal("reason not text", False, reason=42),
        _removal("by the recipient", False, actor={"kind": "recipient"}),
        _removal("by a system with an id", False, actor={"kind": "system", "id": "s-1"}),
        _removal("by a user with a null id", False, actor={"kind": "user", "id": None}),
        _removal("by a user with an id, no name", True, actor={"kind": "user", "id": "u-42"}),
        _removal("by a user with a blank id", True, actor={**user, "id": " "}),
        _removal("without an actor", False, actor=DROP),
        _removal("of a person known by id", True, person={"person_id": "p-1"}),
        Case("link: null Salesforce id", _with(LINK, "person.salesforce_id", None), expect=False),
        Case(
            "link: by email only",
            {**LINK, "person": {"email": "a@b", "salesforce_id": "0035g00000AbCdE"}},
            expect=True,
        ),
        Case("unsubscribe by an unnamed user", {**SAMPLE, "actor": {"kind": "user"}}, expect=True),
        Case("unsubscribe with a blank reason", {**SAMPLE, "reason": " "}, expect=True),
        Case("unsubscribe without a Salesforce id", _with(SAMPLE, "person.salesforce_id", DROP)),
    ]


def _nested(depth: int) -> Case:
    junk: list[Any] = []
    for _ in range(depth - 1):
        junk = [junk]
    wire = json.dumps(SAMPLE)[:-1] + ', "junk": ' + "[" * depth + "]" * depth + "}"
    return Case(
        f"an unknown field {depth} arrays deep", {**SAMPLE, "junk": junk}, wire=wire.encode()
    )


def _whole_messages() -> list[Case]:
    padding = MAX_BYTES - len(json.dumps({**SAMPLE, "padding": ""}).encode())
    deep = _nested(5000)
    return [
        _nested(200),
        Case(deep.name, deep.message, unstated="nesting_depth", wire=deep.wire),
        Case("an empty object", {}, expect=False),
        Case("an array of the sample", [SAMPLE], expect=False),
        Case("a string", "unsubscribed", expect=False),
        Case("null", None, expect=False),
        Case("a number", 1, expect=False),
        Case("unknown fields", {**SAMPLE, "campaign": {"id": 7}, "x": [None]}, expect=True),
        Case("exactly 1 MiB", {**SAMPLE, "padding": "x" * padding}, expect=True),
        Case("1 MiB and a byte", {**SAMPLE, "padding": "x" * (padding + 1)}, unstated="value_size"),
        Case(
            "a lone surrogate in the reason",
            {**SAMPLE, "reason": "\ud800"},
            unstated="unpaired_surrogate",
        ),
        Case(
            "a lone surrogate in an unknown field",
            {**SAMPLE, "note": "a\udfff"},
            unstated="unpaired_surrogate",
        ),
    ]


def corpus() -> list[Case]:
    cases = [
        *_shapes(),
        *_bounds(),
        *ISSUE_DISAGREEMENTS,
        *_values(),
        *_across_fields(),
        *_whole_messages(),
    ]
    return [_dropped(case) for case in cases]


def _dropped(case: Case) -> Case:
    """Merged messages ({**REMOVAL, actor: DROP}) may carry DROP at the top: remove the field."""
    if isinstance(case.message, dict) and DROP in case.message.values():
        message = {key: value for key, value in case.message.items() if value is not DROP}
        return Case(case.name, message, case.unstated, case.expect, case.wire)
    return case


def consume(value: bytes) -> str | None:
    """The consumer's verdict: None when it accepts, else the dead-letter code."""
    try:
        decode(value, now=NOW)
    except ContractError as error:
        return error.code
    return None


@pytest.fixture(scope="module")
def validator() -> Any:
    return strict_validator(json_schema())


@pytest.fixture(scope="module")
def rules() -> dict[str, str | None]:
    return unstated_rules(CONTRACT)


def test_the_corpus_is_broad_and_both_verdicts_occur(validator: Any) -> None:
    cases = corpus()
    names = [case.name for case in cases]
    assert len(cases) >= 100
    assert len(set(names)) == len(names), "each case has its own name"
    accepted = sum(validator.is_valid(case.message) for case in cases)
    assert accepted >= 50 and len(cases) - accepted >= 150, (accepted, len(cases))


def test_the_validator_and_the_consumer_agree_except_on_the_documented_rules(
    validator: Any, rules: dict[str, str | None]
) -> None:
    assert disagreements(corpus(), validator, consume, rules) == []


def test_every_documented_rule_is_shown_by_the_corpus(rules: dict[str, str | None]) -> None:
    shown = {case.unstated for case in corpus()}
    assert set(rules) <= shown, f"documented rules with no case: {set(rules) - shown}"


def test_the_documented_rules_name_known_codes(rules: dict[str, str | None]) -> None:
    assert {"salesforce_id_checksum", "email_normalisation", "future_timestamp"} <= set(rules)
    assert {code for code in rules.values() if code} <= CODES


def test_the_wire_forms_are_checked_by_format_and_by_pattern(validator: Any) -> None:
    fields = json_schema()["$defs"]["ChangeV1"]["properties"]
    assert {"uuid", "date-time"} <= set(keyword_values(fields, "format"))
    checker = validator.format_checker
    assert not checker.conforms("2024-02-30T10:00:00Z", "date-time")  # rfc3339-validator at work
    assert not checker.conforms("7d3f2b9e0c1a4f5e9b8d2a6c4e1f0b37", "uuid")
    assert "pattern" in fields["event_id"] and "pattern" in fields["occurred_at"]


def test_every_pattern_means_the_same_in_python_and_ecma() -> None:
    texts = {text for case in corpus() for text in strings_in(case.message) if len(text) < 400}
    assert pattern_disagreements(json_schema(), texts) == []


def test_the_helper_catches_a_pattern_that_python_and_ecma_read_differently() -> None:
    # `$` before a final newline, and `\s`, are where the two engines part.
    schema = {"type": "string", "pattern": r"^\w+\s?$"}
    assert pattern_disagreements(schema, ["abc", "é"])
