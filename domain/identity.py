"""Who a person is, and what stands in for an email address.

The identity model:
- A **person** is the sales tool's person id: key `person:<id>`.
- An **address** (a mailbox) is a normalised email (trimmed, lower-cased), known by its keyed
  hash: key `email:<HMAC-SHA256 hex>`. A change that names only an email is a change to the
  address itself; the address is then "the person" of that change.
- A change that names a person id *and* an email links the two: the person carries the address.
  The link is recorded by the change itself (every change event names its `mailbox`) and is
  indexed beside the log, so an address finds every person that carries it.
- The clear address is never an aggregate id, never in an event, never in a log line at INFO: it
  lives only in an erasable table beside the log (`forget` deletes it). The keyed hash cannot be
  reversed from a list of known addresses without the key, which lives outside the store.

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
PERSON_PREFIX = "person:"
ADDRESS_PREFIX = "email:"


class InvalidSalesforceId(ValueError):
    pass


class RecordType(StrEnum):
    CONTACT = "Contact"
    LEAD = "Lead"


_PREFIXES = {"003": RecordType.CONTACT, "00Q": RecordType.LEAD}


def checksum(id15: str) -> str:
    """The 3-character suffix that makes a 15-character id case-safe: for each run of 5, a bit
    per upper-case letter (the first character the lowest bit), as a letter of _ALPHABET."""
    if len(id15) == 15 and id15.isascii():
        # The bits as b"0"/b"1", a run's five looked up whole (0.5 µs, not 2.5).
        flags = id15.encode().translate(_UPPER_AS_ONE)
        return _LETTER[flags[0:5]] + _LETTER[flags[5:10]] + _LETTER[flags[10:15]]
    suffix = ""
    for chunk in (id15[0:5], id15[5:10], id15[10:15]):
        bits = sum(1 << i for i, char in enumerate(chunk) if "A" <= char <= "Z")
        suffix += _ALPHABET[bits]
    return suffix


# A run's flags, first character first, to its letter: the first character is the lowest bit.
_LETTER = {format(bits, "05b")[::-1].encode(): _ALPHABET[bits] for bits in range(32)}
_UPPER_AS_ONE = bytes(ord("1") if ord("A") <= byte <= ord("Z") else ord("0") for byte in range(256))


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
    """The unkeyed sha256 of a normalised email: only the Kafka key contract uses it (a routing
    pseudonym chosen by producers, who do not hold the address key)."""
    return hashlib.sha256(normalise_email(email).encode()).hexdigest()


class AddressKeys:
    """Keyed hashes of email addresses (HMAC-SHA256): the stand-in for an address everywhere."""

    def __init__(self, secret: bytes) -> None:
        if len(secret) < 16:
            raise ValueError("the address key must be at least 16 bytes")
        self._cache: dict[str, str] = {}
        # RFC 2104's inner and outer hashes with the padded key already absorbed: each address
        # then costs two copies and two short updates, not hmac.digest's key schedule (2.3 µs).
        block = (hashlib.sha256(secret).digest() if len(secret) > 64 else secret).ljust(64, b"\0")
        self._inner = hashlib.sha256(bytes(byte ^ 0x36 for byte in block))
        self._outer = hashlib.sha256(bytes(byte ^ 0x5C for byte in block))

    def __repr__(self) -> str:
        return "AddressKeys(<secret>)"

    def key_of(self, email: str) -> str:
        """`email:<32 hex digits of HMAC-SHA256>` of the normalised address."""
        return self.key_of_normalised(normalise_email(email))

    def key_of_normalised(self, normalised: str) -> str:
        """`key_of` an address already normalised (the contract normalises it on receipt)."""
        key = self._cache.get(normalised)
        if key is None:
            # HMAC-SHA256 truncated to 128 bits (RFC 2104 allows it): shorter keys in every event.
            inner, outer = self._inner.copy(), self._outer.copy()
            inner.update(normalised.encode())
            outer.update(inner.digest())
            key = ADDRESS_PREFIX + outer.digest()[:16].hex()
            if len(self._cache) > 65536:
                self._cache.clear()
            self._cache[normalised] = key
        return key


def person_key(person_id: str) -> str:
    """The key of a person known by the sales tool's id."""
    return PERSON_PREFIX + person_id


def is_address(key: str) -> bool:
    return key.startswith(ADDRESS_PREFIX)


@lru_cache(maxsize=65536)
def aggregate_id(key: str) -> uuid.UUID:
    """The event-store id of a person or address, from its key (never from a clear email):
    `uuid.uuid5(PERSON_NAMESPACE, key)`, made without UUID's checking constructor (most keys
    the ingest sees are new; tests/unit/test_person.py checks it against uuid5)."""
    digest = hashlib.sha1(_NAMESPACE_BYTES + key.encode(), usedforsecurity=False).digest()
    value = (int.from_bytes(digest[:16]) & _CLEAR_VERSION_AND_VARIANT) | _VERSION_5_RFC_4122
    made = _new_uuid(uuid.UUID)
    _set(made, "int", value)
    _set(made, "is_safe", uuid.SafeUUID.unknown)
    return made


_NAMESPACE_BYTES = PERSON_NAMESPACE.bytes
_CLEAR_VERSION_AND_VARIANT = ~((0xF000 << 64) | (0xC000 << 48)) & ((1 << 128) - 1)
_VERSION_5_RFC_4122 = (5 << 76) | (0x8000 << 48)
_new_uuid = object.__new__
_set = object.__setattr__
