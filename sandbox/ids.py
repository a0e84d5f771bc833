"""Salesforce record ids, as the fake org knows them: its own implementation, written from
Salesforce's documentation and not shared with the product, so that a mistake on one side is
caught by the other (a known-pair test keeps both honest).

A 15-character id is case-sensitive; the 18-character form appends three characters, one per
5-character chunk, each encoding which of the chunk's characters are upper-case letters.
"""

from __future__ import annotations

import string

_SUFFIX_ALPHABET = string.ascii_uppercase + "012345"
_ID_ALPHABET = frozenset(string.ascii_letters + string.digits)


class InvalidSalesforceId(ValueError):
    pass


def _suffix(id15: str) -> str:
    chars = []
    for start in (0, 5, 10):
        flags = 0
        for position in range(5):
            if id15[start + position] in string.ascii_uppercase:
                flags |= 1 << position
        chars.append(_SUFFIX_ALPHABET[flags])
    return "".join(chars)


def to_18(record_id: str) -> str:
    """The case-safe 18-character id; raises InvalidSalesforceId for anything else."""
    if len(record_id) not in (15, 18) or not set(record_id) <= _ID_ALPHABET:
        raise InvalidSalesforceId(f"malformed id: {record_id!r}")
    full = record_id[:15] + _suffix(record_id[:15])
    if len(record_id) == 18 and record_id[15:].upper() != full[15:]:
        raise InvalidSalesforceId(f"malformed id: {record_id!r}")
    return full
