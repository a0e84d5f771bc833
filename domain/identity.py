"""Who a person is: the sales tool's person id, else the normalised email (hashed, never stored as an id).

Also Salesforce record ids: 15-character ids are case-sensitive; the 18-character form appends a
3-character checksum that makes them case-safe. Contact ids start `003`, Lead ids `00Q`.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from enum import StrEnum
from functools import lru_cache

_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"
_ID_CHARS = re.compile(r"^[a-zA-Z0-9]{15}(?:[a-zA-Z0-9]{3})?$")
# A fixed namespace so the same person key always maps to the same aggregate id.
PERSON_NAMESPACE = uuid.UUID("6f1c1f6e-8a51-4e55-9d0b-0f3f5c7d2a11")


class InvalidSalesforceId(ValueError):
    pass


class RecordType(StrEnum):
    CONTACT = "Contact"
    LEAD = "Lead"


_PREFIXES = {"003": RecordType.CONTACT, "00Q": RecordType.LEAD}


def checksum(id15: str) -> str:
    """The 3-character suffix that makes a 15-character id case-safe."""
    suffix = ""
    for chunk in (id15[0:5], id15[5:10], id15[10:15]):
        bits = sum(1 << i for i, char in enumerate(chunk) if "A" <= char <= "Z")
        suffix += _ALPHABET[bits]
    return suffix


def to_18(record_id: str) -> str:
    """The 18-character form of a Salesforce id; raises InvalidSalesforceId when malformed."""
    if not isinstance(record_id, str) or not _ID_CHARS.match(record_id):
        raise InvalidSalesforceId("a Salesforce id has 15 or 18 letters and digits")
    id15 = record_id[:15]
    expected = id15 + checksum(id15)
    if len(record_id) == 18 and record_id[15:].upper() != expected[15:]:
        raise InvalidSalesforceId("the 18-character id's checksum does not match its first 15")
    return expected


def record_type(record_id: str) -> RecordType:
    """Contact or Lead, from the id's key prefix; raises InvalidSalesforceId for other objects."""
    try:
        return _PREFIXES[record_id[:3]]
    except KeyError:
        raise InvalidSalesforceId(
            "a person's Salesforce id starts 003 (Contact) or 00Q (Lead)"
        ) from None


def normalise_salesforce_id(record_id: str) -> str:
    """Validated, 18-character, Contact or Lead id."""
    full = to_18(record_id)
    record_type(full)
    return full


def normalise_email(email: str) -> str:
    """Trimmed and lower-cased: mailboxes are case-insensitive in practice."""
    return email.strip().lower()


def email_hash(email: str) -> str:
    """A stable pseudonym for an email: what logs, ids and Kafka keys carry instead of it."""
    return hashlib.sha256(normalise_email(email).encode()).hexdigest()


def person_key(person_id: str | None, email: str | None) -> str:
    """The person's identity: `person:<id>` when the sales tool gave one, else `email:<sha256>`."""
    if person_id:
        return f"person:{person_id}"
    if email:
        return f"email:{email_hash(email)}"
    raise ValueError("a person is identified by a person id or an email")


@lru_cache(maxsize=65536)
def aggregate_id(key: str) -> uuid.UUID:
    """The event-store id of a person, derived from the person key (never from a clear email)."""
    return uuid.uuid5(PERSON_NAMESPACE, key)
