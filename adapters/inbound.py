"""The inbound Kafka contract (PRODUCT.md §4): one JSON change message, decoded and checked.

`decode` turns a Kafka value into a normalised `ChangeV1` or raises `ContractError`, nothing
else, so the consumer can dead-letter the original bytes with the code and keep the partition
moving. The JSON Schema is generated from the same Structs: `python -m adapters.inbound schema`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
import uuid
from datetime import datetime
from typing import Annotated, Any, Final, Literal, get_args

import msgspec

from adapters.inbound_errors import (
    CODES,
    ContractError,
    from_decode_error,
    from_validation_error,
)
from domain.application import ChangeKind
from domain.identity import (
    InvalidSalesforceId,
    normalise_email,
    normalise_salesforce_id,
    person_key,
)

__all__ = [
    "CODES",
    "SCHEMA_VERSION",
    "Actor",
    "ChangeV1",
    "ContractError",
    "PersonRef",
    "decode",
    "encode",
    "json_schema",
    "kafka_key",
]

SCHEMA_VERSION: Final = 1
MAX_BYTES: Final = 1_048_576

# The change types are the domain's: a type the wire accepts is always one the domain knows.
ChangeType = ChangeKind
Source = Literal["sales", "marketing", "salesforce"]
ActorKind = Literal["recipient", "user", "system"]
Channel = Literal["email_link", "manual", "import", "bounce", "complaint", "api", "sync"]

Id = Annotated[
    str,
    msgspec.Meta(min_length=1, max_length=255, description="An identifier, no control characters."),
]
Name = Annotated[
    str,
    msgspec.Meta(
        min_length=1, max_length=255, description="A display name, no control characters."
    ),
]
Email = Annotated[
    str,
    msgspec.Meta(
        max_length=320,
        description="One @, text on both sides, no spaces; trimmed and lower-cased on receipt.",
    ),
]
SalesforceId = Annotated[
    str,
    msgspec.Meta(
        max_length=255,
        description="15 or 18 characters, 003… (Contact) or 00Q… (Lead); stored as 18.",
    ),
]
Reason = Annotated[str, msgspec.Meta(max_length=2000, description="Free text, why.")]
OccurredAt = Annotated[
    datetime,
    msgspec.Meta(tz=True, description="RFC 3339 with an offset, e.g. 2024-05-01T09:30:00+02:00."),
]


class PersonRef(msgspec.Struct, frozen=True, forbid_unknown_fields=False):
    """Who the change is about: the sales tool's person id, else the email."""

    person_id: Id | None = None
    email: Email | None = None
    salesforce_id: SalesforceId | None = None


class Actor(msgspec.Struct, frozen=True, forbid_unknown_fields=False):
    """Who made the change: the recipient (via a link), a named user, or a system."""

    kind: ActorKind
    id: Id | None = None
    name: Name | None = None


class ChangeV1(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=False):
    """One unsubscribe or opt-out change, schema version 1. Unknown fields are ignored."""

    event_id: Annotated[uuid.UUID, msgspec.Meta(description="Idempotency key of the change.")]
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


_ENVELOPE = msgspec.json.Decoder(_Envelope)
_DECODERS: Final[dict[int, msgspec.json.Decoder[ChangeV1]]] = {1: msgspec.json.Decoder(ChangeV1)}
_ENCODER = msgspec.json.Encoder()
# The closed sets by JSON path, so a refusal can list what is allowed without echoing the value.
_CHOICES: Final[dict[str, tuple[object, ...]]] = {
    "$.schema_version": (SCHEMA_VERSION,),
    "$.type": tuple(kind.value for kind in ChangeKind),
    "$.source": get_args(Source),
    "$.actor.kind": get_args(ActorKind),
    "$.channel": get_args(Channel),
}
_PLAUSIBLE_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def decode(value: bytes | bytearray | memoryview | None, *, max_bytes: int = MAX_BYTES) -> ChangeV1:
    """A Kafka value as a validated, normalised change; raises ContractError and nothing else."""
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
        version = _ENVELOPE.decode(value).schema_version
        decoder = _DECODERS.get(version)
        if decoder is None:
            known = ", ".join(str(v) for v in _DECODERS)
            raise ContractError(
                "unknown_schema_version",
                f"$.schema_version: version {version} is not one this consumer reads ({known})",
            )
        change = decoder.decode(value)
    except msgspec.ValidationError as error:
        raise from_validation_error(error, _CHOICES) from None
    except msgspec.DecodeError as error:
        raise from_decode_error(error) from None
    except RecursionError:
        raise ContractError("too_deep", "$: the JSON is nested too deeply") from None
    return _checked(change)


def _checked(change: ChangeV1) -> ChangeV1:
    """The rules a Struct cannot express, and the normalised identifiers."""
    person, actor = change.person, change.actor
    # They end up in log lines and Salesforce queries, where a control character does harm.
    identifiers = {
        "$.person.person_id": person.person_id,
        "$.actor.id": actor.id,
        "$.actor.name": actor.name,
    }
    for path, text in identifiers.items():
        if text is not None and _CONTROL.search(text):
            raise ContractError(
                "invalid_characters", f"{path}: must not contain control characters"
            )
    if not person.person_id and person.email is None:
        raise ContractError(
            "no_person_identity", "$.person: a person needs a person_id or an email"
        )
    email = person.email
    if email is not None:
        email = normalise_email(email)
        if not _PLAUSIBLE_EMAIL.match(email) or not email.isprintable():
            raise ContractError(
                "invalid_email",
                "$.person.email: an email has exactly one at-sign, text on both sides, no spaces",
            )
    salesforce_id = person.salesforce_id
    if salesforce_id is not None:
        try:
            salesforce_id = normalise_salesforce_id(salesforce_id)
        except InvalidSalesforceId as error:
            raise ContractError(
                "invalid_salesforce_id", f"$.person.salesforce_id: {error}"
            ) from None
    if change.type == "unsubscribe_removed":
        if not (change.reason and change.reason.strip()):
            raise ContractError(
                "removal_without_reason", "$.reason: removing an unsubscribe needs a reason"
            )
        if change.actor.kind != "user" or not change.actor.id:
            raise ContractError(
                "removal_without_named_actor",
                "$.actor: removing an unsubscribe needs an actor of kind user with an id",
            )
    if change.type == "person_linked" and salesforce_id is None:
        raise ContractError(
            "link_without_salesforce_id", "$.person.salesforce_id: a link needs a Salesforce id"
        )
    normalised = msgspec.structs.replace(person, email=email, salesforce_id=salesforce_id)
    return msgspec.structs.replace(change, person=normalised)


def encode(change: ChangeV1) -> bytes:
    """The JSON wire form of a change (what a producer sends)."""
    return _ENCODER.encode(change)


def kafka_key(change: ChangeV1) -> bytes:
    """sha256 hex of the person key: same person, same partition; never a clear email."""
    key = person_key(change.person.person_id, change.person.email)
    return hashlib.sha256(key.encode()).hexdigest().encode("ascii")


def json_schema() -> dict[str, Any]:
    """The published JSON Schema of version 1, generated from the Structs."""
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "optout-sync inbound change, version 1",
        "description": (
            "One unsubscribe or opt-out change on the inbound Kafka topic, keyed by the sha256 "
            "of the person key. Fields may be added compatibly; unknown fields are ignored. "
            "Generated by `python -m adapters.inbound schema`; see docs/inbound-contract.md."
        ),
        **msgspec.json.schema(ChangeV1),
    }


def schema_text() -> str:
    """The JSON Schema as published in docs/schema/inbound-change-v1.schema.json."""
    return json.dumps(json_schema(), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m adapters.inbound", description="The inbound change contract."
    )
    verbs = parser.add_subparsers(dest="verb", required=True)
    verbs.add_parser("schema", help="print the JSON Schema of the current version")
    parser.parse_args(argv)
    sys.stdout.write(schema_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
