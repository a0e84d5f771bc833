"""Every kind of bad inbound value, with the dead-letter code `decode` must give it.

Shared by the unit tests and the Kafka integration test, which produces each value to a real
broker and expects it on the dead-letter topic with this code.
"""

from __future__ import annotations

import json
from typing import Any, NamedTuple

from tests.factories import EMAIL, good_message


class BadMessage(NamedTuple):
    name: str
    value: bytes | None
    code: str


def _json(message: Any) -> bytes:
    return json.dumps(message).encode()


def _without(key: str) -> bytes:
    message = good_message()
    del message[key]
    return _json(message)


def _person(**fields: Any) -> bytes:
    return _json(good_message(person={**good_message()["person"], **fields}))


_REMOVAL_BY_USER = {"kind": "user", "id": "u-42", "name": "Grace Hopper"}

BAD_MESSAGES: list[BadMessage] = [
    BadMessage("null value (tombstone)", None, "null_value"),
    BadMessage("empty value", b"", "empty_value"),
    BadMessage("2 MB value", _json(good_message(reason="x" * 2_000_000)), "oversized"),
    BadMessage("invalid UTF-8", b'{"type": "unsubscribed\xff"}', "invalid_utf8"),
    BadMessage(
        "Latin-1 email",
        _person(email="andr\xe9@example.com").replace(b"andr\\u00e9", b"andr\xe9"),
        "invalid_utf8",
    ),
    BadMessage("not JSON", b"unsubscribe ada please", "invalid_json"),
    BadMessage("truncated JSON", _json(good_message())[:-5], "invalid_json"),
    BadMessage("JSON with trailing junk", _json(good_message()) + b" }", "invalid_json"),
    BadMessage(
        "deeply nested junk", b'{"junk":' + b"[" * 100_000 + b"]" * 100_000 + b"}", "too_deep"
    ),
    BadMessage("a JSON array", _json([good_message()]), "not_an_object"),
    BadMessage("a JSON string", _json("unsubscribed"), "not_an_object"),
    BadMessage("JSON null", b"null", "not_an_object"),
    BadMessage("missing schema version", _without("schema_version"), "missing_schema_version"),
    BadMessage("schema version 2", _json(good_message(schema_version=2)), "unknown_schema_version"),
    BadMessage("schema version as a string", _json(good_message(schema_version="1")), "wrong_type"),
    BadMessage(
        "schema version of 5,000 digits",
        b'{"schema_version": 1' + b"0" * 5_000 + b"}",
        "out_of_range",
    ),
    BadMessage("event_id a number", _json(good_message(event_id=12345)), "wrong_type"),
    BadMessage("person a string", _json(good_message(person=EMAIL)), "wrong_type"),
    BadMessage("event_id not a UUID", _json(good_message(event_id="evt-1")), "invalid_uuid"),
    BadMessage(
        "event_id without hyphens",
        _json(good_message(event_id="7d3f2b9e0c1a4f5e9b8d2a6c4e1f0b37")),
        "invalid_uuid",
    ),
    BadMessage("unknown type", _json(good_message(type="resubscribed")), "unknown_type"),
    BadMessage("email as the type", _json(good_message(type=EMAIL)), "unknown_type"),
    BadMessage("unknown source", _json(good_message(source="crm")), "unknown_value"),
    BadMessage("unknown channel", _json(good_message(channel="carrier_pigeon")), "unknown_value"),
    BadMessage("missing event_id", _without("event_id"), "missing_field"),
    BadMessage("missing occurred_at", _without("occurred_at"), "missing_field"),
    BadMessage("missing actor kind", _json(good_message(actor={"id": "u-1"})), "missing_field"),
    BadMessage("person_id too long", _person(person_id="p" * 256), "too_long"),
    BadMessage("reason too long", _json(good_message(reason="r" * 2001)), "too_long"),
    BadMessage("empty person_id", _person(person_id=""), "empty_field"),
    BadMessage("control character in person_id", _person(person_id="p-1\n"), "invalid_characters"),
    BadMessage("NUL in person_id", _person(person_id="p\x001"), "invalid_characters"),
    BadMessage(
        "C1 control in the actor's name",
        _json(good_message(actor={"kind": "system", "name": "Mark\x85eto"})),
        "invalid_characters",
    ),
    BadMessage(
        "neither person id nor email", _person(person_id=None, email=None), "no_person_identity"
    ),
    BadMessage("email without @", _person(email="ada.example.com"), "invalid_email"),
    BadMessage("email with two @", _person(email="ada@lovelace@example.com"), "invalid_email"),
    BadMessage("email with a space", _person(email="ada lovelace@example.com"), "invalid_email"),
    BadMessage("empty email", _person(person_id=None, email=""), "invalid_email"),
    BadMessage("email without a local part", _person(email="@example.com"), "invalid_email"),
    BadMessage("email without a domain", _person(email="ada@"), "invalid_email"),
    BadMessage("email with a newline after it", _person(email=EMAIL + "\n"), "invalid_email"),
    BadMessage(
        "email with a zero-width space", _person(email="ada\u200b@example.com"), "invalid_email"
    ),
    BadMessage(
        "malformed Salesforce id", _person(salesforce_id="003-not-an-id"), "invalid_salesforce_id"
    ),
    BadMessage(
        "Salesforce id of 16 characters",
        _person(salesforce_id="0035g00000AbCdEA"),
        "invalid_salesforce_id",
    ),
    BadMessage(
        "bad 18-character checksum",
        _person(salesforce_id="0035g00000AbCdEZZZ"),
        "invalid_salesforce_id",
    ),
    BadMessage(
        "Account id 001", _person(salesforce_id="0015g00000AbCdEAAV"), "invalid_salesforce_id"
    ),
    BadMessage("empty Salesforce id", _person(salesforce_id=""), "invalid_salesforce_id"),
    BadMessage("bad timestamp", _json(good_message(occurred_at="yesterday")), "bad_timestamp"),
    BadMessage(
        "impossible date", _json(good_message(occurred_at="2024-02-30T10:00:00Z")), "bad_timestamp"
    ),
    BadMessage(
        "timestamp with a space for T",
        _json(good_message(occurred_at="2024-05-01 11:30:00+02:00")),
        "bad_timestamp",
    ),
    BadMessage(
        "timestamp with an offset without a colon",
        _json(good_message(occurred_at="2024-05-01T11:30:00+0200")),
        "bad_timestamp",
    ),
    BadMessage(
        "timestamp far in the future",
        _json(good_message(occurred_at="9999-12-31T23:59:59Z")),
        "future_timestamp",
    ),
    BadMessage(
        "naive timestamp", _json(good_message(occurred_at="2024-05-01T09:30:00")), "naive_timestamp"
    ),
    BadMessage(
        "removal without reason",
        _json(good_message(type="unsubscribe_removed", actor=_REMOVAL_BY_USER)),
        "removal_without_reason",
    ),
    BadMessage(
        "removal with a blank reason",
        _json(good_message(type="unsubscribe_removed", actor=_REMOVAL_BY_USER, reason="  ")),
        "removal_without_reason",
    ),
    BadMessage(
        "removal with an invisible reason",
        _json(good_message(type="unsubscribe_removed", actor=_REMOVAL_BY_USER, reason="\u3000\t")),
        "removal_without_reason",
    ),
    BadMessage(
        "removal by the recipient",
        _json(
            good_message(
                type="unsubscribe_removed", reason="asked by phone", actor={"kind": "recipient"}
            )
        ),
        "removal_without_named_actor",
    ),
    BadMessage(
        "removal by an anonymous user",
        _json(
            good_message(
                type="unsubscribe_removed",
                reason="asked by phone",
                actor={"kind": "user", "name": "Grace"},
            )
        ),
        "removal_without_named_actor",
    ),
    BadMessage(
        "link without Salesforce id",
        _json(good_message(type="person_linked", person={"person_id": "p-1001", "email": EMAIL})),
        "link_without_salesforce_id",
    ),
]
