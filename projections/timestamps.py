"""Times as the read models write them: sortable UTC text."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec

_rfc3339 = msgspec.json.Encoder().encode


def utc_text(at: datetime | None) -> str | None:
    """A time as sortable text: UTC, microseconds, `Z` (naive times are eventsourcing's UTC)."""
    if at is None:
        return None
    if at.tzinfo is UTC and at.year >= 1000:  # the common case: msgspec's RFC 3339, made in C
        text = _rfc3339(at).decode()  # '"2026-03-01T09:30:00[.ffffff]Z"', zero µs left out
        return text[1:-1] if at.microsecond else text[1:-2] + ".000000Z"
    aware = at if at.tzinfo else at.replace(tzinfo=UTC)
    return aware.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
