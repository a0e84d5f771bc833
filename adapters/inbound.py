"""The inbound Kafka contract (PRODUCT.md §4): one JSON change message, decoded and checked.

`decode` turns a Kafka value into a normalised `ChangeV1` or raises `ContractError`, nothing
else, so the consumer can dead-letter the original bytes with the code and keep the partition
moving. The JSON Schema is generated from the same Structs: `python -m adapters.inbound schema`.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Final, Literal, get_args

import msgspec

from adapters.inbound_errors import (
    CODES,
    NOT_A_TIMESTAMP,
    NOT_A_UUID,
    ContractError,
    from_decode_error,
    from_validation_error,
)
from adapters.schema_command import published, run
from domain.application import ChangeKind
from domain.identity import (
    InvalidSalesforceId,
    email_hash,
    normalise_email,
    normalise_salesforce_id,
)

__all__ = [
    "CODES",
    "DEFAULT_MAX_SKEW",
    "SCHEMA_VERSION",
    "Actor",
    "ChangeV1",
    "ContractError",
    "PersonRef",
    "decode",
    "encode",
    "json_schema",
    "kafka_key",
    "rules_across_fields",
]

SCHEMA_VERSION: Final = 1
MAX_BYTES: Final = 1_048_576

# The change types are the domain's: a type the wire accepts is always one the domain knows.
ChangeType = ChangeKind
Source = Literal["sales", "marketing", "salesforce"]
ActorKind = Literal["recipient", "user", "system"]
Channel = Literal["email_link", "manual", "import", "bounce", "complaint", "api", "sync"]

# Patterns are published in the JSON Schema, where they are ECMA-262 regexes searched, not
# matched: each is anchored, uses explicit classes (\s and \w differ between Python and ECMA),
# and ends with _END because Python's `$` also matches before a final newline.
_END: Final = r"(?!\n)$"
_CONTROL: Final = r"\x00-\x1f\x7f-\x9f"
# Characters that show nothing: controls, spaces, invisible formatting (zero-width, bidi, BOM).
_INVISIBLE: Final = (
    r"\x00-\x20\x7f-\xa0\xad\u1680\u2000-\u200f\u2028-\u202f\u205f-\u206f\u3000\ufeff"
)
_NO_CONTROL_PATTERN: Final = rf"^[^{_CONTROL}]*{_END}"
# Surrounding spaces are allowed: the email is trimmed (and lower-cased) on receipt.
_EMAIL_PATTERN: Final = rf"^ *[^@{_INVISIBLE}]+@[^@{_INVISIBLE}]+ *{_END}"
_SALESFORCE_ID_PATTERN: Final = rf"^(?:003|00Q)[0-9A-Za-z]{{12}}(?:[0-9A-Za-z]{{3}})?{_END}"
_VISIBLE_TEXT_PATTERN: Final = rf"^[{_INVISIBLE}]*[^{_INVISIBLE}]"
_UUID_PATTERN: Final = (
    rf"^[0-9A-Fa-f]{{8}}-[0-9A-Fa-f]{{4}}-[0-9A-Fa-f]{{4}}-[0-9A-Fa-f]{{4}}-[0-9A-Fa-f]{{12}}{_END}"
)
_TIMESTAMP_PATTERN: Final = (
    r"^(?!0000)[0-9]{4}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12][0-9]|3[01])"
    r"T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.[0-9]+)?"
    rf"(?:Z|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9]){_END}"
)

Id = Annotated[
    str,
    msgspec.Meta(
        min_length=1,
        max_length=255,
        pattern=_NO_CONTROL_PATTERN,
        description="An identifier, no control characters.",
    ),
]
Name = Annotated[
    str,
    msgspec.Meta(
        min_length=1,
        max_length=255,
        pattern=_NO_CONTROL_PATTERN,
        description="A display name, no control characters.",
    ),
]
Email = Annotated[
    str,
    msgspec.Meta(
        max_length=320,
        pattern=_EMAIL_PATTERN,
        description=(
            "One @, text on both sides, no spaces, controls or invisible characters within; "
            "trimmed and lower-cased on receipt."
        ),
    ),
]
SalesforceId = Annotated[
    str,
    msgspec.Meta(
        pattern=_SALESFORCE_ID_PATTERN,
        description=(
            "15 or 18 letters and digits, 003… (Contact) or 00Q… (Lead); an 18-character id's "
            "checksum must match; stored as 18."
        ),
    ),
]
Reason = Annotated[str, msgspec.Meta(max_length=2000, description="Free text, why.")]
OccurredAt = Annotated[
    datetime,
    msgspec.Meta(
        tz=True,
        description=(
            "RFC 3339 with `T` and an offset, e.g. 2024-05-01T09:30:00+02:00; at most the "
            "allowed clock skew in the future."
        ),
    ),
]


# gc=False: texts only, so no cycle is possible; one of each is made per message, out of the
# cyclic collector's count.
class PersonRef(msgspec.Struct, frozen=True, forbid_unknown_fields=False, gc=False):
    """Who the change is about: the sales tool's person id, else the email."""

    person_id: Id | None = None
    email: Email | None = None
    salesforce_id: SalesforceId | None = None


class Actor(msgspec.Struct, frozen=True, forbid_unknown_fields=False, gc=False):
    """Who made the change: the recipient (via a link), a named user, or a system."""

    kind: ActorKind
    id: Id | None = None
    name: Name | None = None


class ChangeV1(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=False):
    """One unsubscribe or opt-out change, schema version 1. Unknown fields are ignored."""

    event_id: Annotated[
        uuid.UUID,
        msgspec.Meta(description="Idempotency key of the change; hyphenated, 8-4-4-4-12 hex."),
    ]
    schema_version: Literal[1]
    type: ChangeType
    person: PersonRef
    source: Source
    actor: Actor
    channel: Channel
    reason: Reason | None = None
    occurred_at: OccurredAt


class _Envelope(msgspec.Struct, forbid_unknown_fields=False):
    """Just enough to tell which versioned Struct to decode the rest with."""

    schema_version: int


class _WireForms(msgspec.Struct, forbid_unknown_fields=False):
    """The exact text of the fields msgspec reads leniently (a bare-hex UUID, a space for `T`)."""

    event_id: Annotated[str, msgspec.Meta(pattern=_UUID_PATTERN)]
    occurred_at: Annotated[str, msgspec.Meta(pattern=_TIMESTAMP_PATTERN)]


DEFAULT_MAX_SKEW: Final = timedelta(minutes=5)
_ENVELOPE = msgspec.json.Decoder(_Envelope)
_WIRE_FORMS = msgspec.json.Decoder(_WireForms)
_DECODERS: Final[dict[int, msgspec.json.Decoder[ChangeV1]]] = {1: msgspec.json.Decoder(ChangeV1)}
_V1 = _DECODERS[1]
_ENCODER = msgspec.json.Encoder()
# The closed sets by JSON path, so a refusal can list what is allowed without echoing the value.
_CHOICES: Final[dict[str, tuple[object, ...]]] = {
    "$.schema_version": (SCHEMA_VERSION,),
    "$.type": tuple(kind.value for kind in ChangeKind),
    "$.source": get_args(Source),
    "$.actor.kind": get_args(ActorKind),
    "$.channel": get_args(Channel),
}
_CONTROL_CHARACTERS: Final = ("invalid_characters", "must not contain control characters")
# What a pattern refusal means, by JSON path: the code and the sentence, never the value.
_PATTERNS: Final[dict[str, tuple[str, str]]] = {
    "$.event_id": ("invalid_uuid", NOT_A_UUID),
    "$.occurred_at": ("bad_timestamp", NOT_A_TIMESTAMP),
    "$.person.person_id": _CONTROL_CHARACTERS,
    "$.actor.id": _CONTROL_CHARACTERS,
    "$.actor.name": _CONTROL_CHARACTERS,
    "$.person.email": (
        "invalid_email",
        "an email has exactly one at-sign, text on both sides, no spaces",
    ),
    "$.person.salesforce_id": (
        "invalid_salesforce_id",
        "a person's Salesforce id is 15 or 18 letters and digits starting 003 or 00Q",
    ),
}
_VISIBLE_TEXT = re.compile(_VISIBLE_TEXT_PATTERN)


def decode(
    value: bytes | bytearray | memoryview | None,
    *,
    max_bytes: int = MAX_BYTES,
    now: datetime | None = None,
    max_skew: timedelta = DEFAULT_MAX_SKEW,
) -> ChangeV1:
    """A Kafka value as a validated, normalised change; raises ContractError and nothing else.

    `occurred_at` may lie at most `max_skew` after `now` (the current time by default).
    """
    if value is None:
        raise ContractError("null_value", "$: the message has no value (a tombstone)")
    if not isinstance(value, bytes | bytearray | memoryview):
        raise ContractError("not_bytes", "$: the message value is not bytes")
    # Size first: nothing of an oversized value is parsed.
    if len(value) > max_bytes:
        raise ContractError("oversized", f"$: the value is larger than {max_bytes} bytes")
    if len(value) == 0:
        raise ContractError("empty_value", "$: the message value is empty")
    try:
        bytes(value).decode("utf-8")
    except UnicodeDecodeError as error:
        raise ContractError(
            "invalid_utf8", f"$: the value is not UTF-8 (bad byte at offset {error.start})"
        ) from None
    try:
        change = _V1.decode(value)  # nearly every message: one full parse, not two
        _WIRE_FORMS.decode(value)
    except (msgspec.ValidationError, msgspec.DecodeError, RecursionError):
        change = _decoded(value)  # the careful way, which names the first fault
    change = _checked(change)
    ahead = change.occurred_at - (now or datetime.now(UTC))
    if ahead > max_skew:
        raise ContractError(
            "future_timestamp",
            f"$.occurred_at: more than {max_skew.total_seconds():g} seconds in the future "
            "(the allowed clock skew)",
        )
    return change


def _decoded(value: bytes | bytearray | memoryview) -> ChangeV1:
    """The slow path: the envelope first, so a message of another version says so."""
    try:
        version = _ENVELOPE.decode(value).schema_version
        decoder = _DECODERS.get(version)
        if decoder is None:
            known = ", ".join(str(v) for v in _DECODERS)
            raise ContractError(
                "unknown_schema_version",
                f"$.schema_version: version {version} is not one this consumer reads ({known})",
            )
        change = decoder.decode(value)
        _WIRE_FORMS.decode(value)  # after the types, so a wrong type keeps its own code
    except msgspec.ValidationError as error:
        raise from_validation_error(error, _CHOICES, _PATTERNS) from None
    except msgspec.DecodeError as error:
        raise from_decode_error(error) from None
    except RecursionError:
        raise ContractError("too_deep", "$: the JSON is nested too deeply") from None
    return change


def _checked(change: ChangeV1) -> ChangeV1:
    """The rules across fields, the Salesforce id's checksum, and the normalised identifiers."""
    person = change.person
    email, salesforce_id = rules_across_fields(change.type, person, change.reason, change.actor)
    if email == person.email and salesforce_id == person.salesforce_id:
        return change  # already normalised, as most are
    normalised = msgspec.structs.replace(person, email=email, salesforce_id=salesforce_id)
    return msgspec.structs.replace(change, person=normalised)


def rules_across_fields(
    change_type: ChangeType, person: PersonRef, reason: str | None, actor: Actor
) -> tuple[str | None, str | None]:
    """The person's normalised email and Salesforce id, once the rules across fields hold;
    raises ContractError. (Shared with the one-parse path, adapters.inbound_fast.)"""
    if not person.person_id and person.email is None:
        raise ContractError(
            "no_person_identity", "$.person: a person needs a person_id or an email"
        )
    email = None if person.email is None else normalise_email(person.email)
    salesforce_id = person.salesforce_id
    if salesforce_id is not None:
        try:
            salesforce_id = normalise_salesforce_id(salesforce_id)
        except InvalidSalesforceId as error:
            raise ContractError(
                "invalid_salesforce_id", f"$.person.salesforce_id: {error}"
            ) from None
    if change_type == "unsubscribe_removed":
        if reason is None or not _VISIBLE_TEXT.search(reason):
            raise ContractError(
                "removal_without_reason", "$.reason: removing an unsubscribe needs a reason"
            )
        if actor.kind != "user" or not actor.id:
            raise ContractError(
                "removal_without_named_actor",
                "$.actor: removing an unsubscribe needs an actor of kind user with an id",
            )
    if change_type == "person_linked" and salesforce_id is None:
        raise ContractError(
            "link_without_salesforce_id", "$.person.salesforce_id: a link needs a Salesforce id"
        )
    return email, salesforce_id


def encode(change: ChangeV1) -> bytes:
    """The JSON wire form of a change (what a producer sends)."""
    return _ENCODER.encode(change)


def kafka_key(change: ChangeV1) -> bytes:
    """sha256 hex of `person:<id>`, else of `email:<sha256 of the normalised email>`: same person,
    same partition. A routing pseudonym, not a secret: producers compute it without our key, so a
    list of known addresses can find it; the address itself is never in a key."""
    person = change.person
    if person.person_id:
        key = f"person:{person.person_id}"
    else:
        assert person.email is not None
        key = f"email:{email_hash(person.email)}"
    return hashlib.sha256(key.encode()).hexdigest().encode("ascii")


def json_schema() -> dict[str, Any]:
    """The published JSON Schema of version 1, generated from the Structs.

    Added here, from the same constants the decoder uses: the wire forms of `event_id` and
    `occurred_at`, and the rules across fields (identity, removal, link) that `_checked` applies.
    """
    generated = msgspec.json.schema(ChangeV1)
    definitions = generated["$defs"]
    change, person = definitions["ChangeV1"], definitions["PersonRef"]
    fields = change["properties"]
    fields["schema_version"] = {"type": "integer", **fields["schema_version"]}
    fields["event_id"]["pattern"] = _UUID_PATTERN
    fields["occurred_at"]["pattern"] = _TIMESTAMP_PATTERN
    person["anyOf"] = [
        {"required": [field], "properties": {field: {"type": "string"}}}
        for field in ("person_id", "email")
    ]
    person["description"] += " At least one of person_id and email."
    change["allOf"] = [
        {
            "description": "Removing an unsubscribe needs a reason and a user with an id.",
            "if": _type_is(ChangeKind.UNSUBSCRIBE_REMOVED),
            "then": {
                "required": ["reason", "actor"],
                "properties": {
                    "reason": {"type": "string", "pattern": _VISIBLE_TEXT_PATTERN},
                    "actor": {
                        "required": ["kind", "id"],
                        "properties": {"kind": {"const": "user"}, "id": {"type": "string"}},
                    },
                },
            },
        },
        {
            "description": "A link needs a Salesforce id.",
            "if": _type_is(ChangeKind.PERSON_LINKED),
            "then": {
                "properties": {
                    "person": {
                        "required": ["salesforce_id"],
                        "properties": {"salesforce_id": {"type": "string"}},
                    }
                }
            },
        },
    ]
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "optout-sync inbound change, version 1",
        "description": (
            "One unsubscribe or opt-out change on the inbound Kafka topic, keyed by the sha256 "
            "of the person key. Fields may be added compatibly; unknown fields are ignored. "
            "Patterns are anchored ECMA-262 regexes. Rules a schema cannot state (the Salesforce "
            "id's checksum, the email's normalisation, the future-time skew, the value's size) "
            "are listed in docs/inbound-contract.md. "
            "Generated by `python -m adapters.inbound schema`."
        ),
        **generated,
    }


def _type_is(change_type: ChangeType) -> dict[str, Any]:
    return {"required": ["type"], "properties": {"type": {"const": change_type}}}


def schema_text() -> str:
    """The JSON Schema as published in docs/schema/inbound-change-v1.schema.json."""
    return published(json_schema())


def main(argv: list[str] | None = None) -> int:
    return run("python -m adapters.inbound", "The inbound change contract.", schema_text, argv)


if __name__ == "__main__":
    raise SystemExit(main())
