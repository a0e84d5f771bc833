"""One parse for a plainly well-formed inbound message, straight to the domain's `Change`.

`decode` parses a message twice (the structs, then the exact wire text of `event_id` and
`occurred_at`, which msgspec reads leniently) and the ingest's `to_change` then builds the change.
Here a message is parsed once, with those two fields kept as their raw JSON text, which is
checked and then read; the change is built from that one parse. Any doubt — a fault, an escape
anywhere, one of those two keys written twice, a rule across fields not met — gives None, and
the caller takes the careful path, which names the fault. So whatever this returns is what
`to_change(decode(value))` returns (tests/unit/test_inbound_fast.py, old and new side by side).
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Final, Literal

import msgspec

from adapters.inbound import (
    _END,
    _TIMESTAMP_PATTERN,
    MAX_BYTES,
    Actor,
    ChangeType,
    Channel,
    ContractError,
    OccurredAt,
    PersonRef,
    Reason,
    Source,
    rules_across_fields,
)
from domain.application import Change
from domain.identity import AddressKeys, person_key
from domain.person import Provenance

__all__ = ["fast_change"]


class _WellFormed(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=False, gc=False):
    """`ChangeV1`, field for field, but `event_id` and `occurred_at` as their JSON text.
    (gc=False: short-lived, and nothing in it can lead back to it.)"""

    event_id: msgspec.Raw
    schema_version: Literal[1]
    type: ChangeType
    person: PersonRef
    source: Source
    actor: Actor
    channel: Channel
    reason: Reason | None = None
    occurred_at: msgspec.Raw


_WELL_FORMED = msgspec.json.Decoder(_WellFormed)
_EVENT_ID = msgspec.json.Decoder(uuid.UUID)
_OCCURRED_AT = msgspec.json.Decoder(OccurredAt)
# The contract's timestamp pattern on the raw text, quotes and all (no escape can be inside it).
_OCCURRED_AT_TEXT: Final = re.compile(
    b'"' + _TIMESTAMP_PATTERN.removeprefix("^").removesuffix(_END).encode() + b'"'
)
_BACKSLASH: Final = ord("\\")
_EVENT_ID_TEXT_LENGTH: Final = 38  # 8-4-4-4-12 and two quotes


def fast_change(
    value: object, keys: AddressKeys, max_skew: timedelta, now: datetime | None = None
) -> Change | None:
    """The change of a plainly well-formed message in one parse, or None: then the careful
    path (`decode`, then `to_change`) decides, with the same result or the fault's code."""
    if (
        type(value) is not bytes
        or len(value) > MAX_BYTES
        # An escape can spell a key twice (`event\u005fid`), and msgspec keeps a repeated key's
        # last value: the earlier one, kept as raw text, would never be checked.
        or _BACKSLASH in value  # (an int: memchr, 0.03 µs; b"\\" is a search, 0.2)
        or value.count(b'"event_id"') != 1
        or value.count(b'"occurred_at"') != 1
    ):
        return None
    try:
        if not value.isascii():  # (ASCII is UTF-8, and 0.03 µs to tell)
            value.decode()  # UTF-8: msgspec does not look into the text of fields it skips
        message = _WELL_FORMED.decode(value)
        event_id_text, occurred_at_text = message.event_id, message.occurred_at
        # msgspec reads 32 bare hex digits as a UUID too, or 36 as 8-4-4-4-12: the contract wants
        # the hyphens, so 36 characters (no escape can lengthen them here).
        if (
            len(event_id_text) != _EVENT_ID_TEXT_LENGTH
            or _OCCURRED_AT_TEXT.fullmatch(occurred_at_text) is None
        ):
            return None
        event_id = _EVENT_ID.decode(event_id_text)
        occurred_at = _OCCURRED_AT.decode(occurred_at_text)
    except (UnicodeDecodeError, msgspec.ValidationError, msgspec.DecodeError, RecursionError):
        return None
    person, actor, kind = message.person, message.actor, message.type
    try:
        email, salesforce_id = rules_across_fields(kind, person, message.reason, actor)
    except ContractError:  # the careful path raises it again, with its place among the faults
        return None
    if occurred_at - (now or datetime.now(UTC)) > max_skew:
        return None
    mailbox = None if email is None else keys.key_of_normalised(email)
    provenance = Provenance(
        event_id,
        message.source,
        actor.kind,
        actor.id,
        actor.name,
        message.channel,
        occurred_at,
        message.reason,
    )
    person_id = person.person_id
    key = person_key(person_id) if person_id else mailbox
    assert key is not None
    return Change(kind, key, provenance, mailbox, email, salesforce_id)
