"""Valid inbound changes for tests: override only what the test is about."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from adapters.inbound import Actor, ChangeV1, PersonRef

CONTACT_ID_15 = "0035g00000AbCdE"
CONTACT_ID_18 = "0035g00000AbCdEAAV"
LEAD_ID_18 = "00Q5g00000XyZaBEAV"
EMAIL = "ada.lovelace@example.com"


def good_change(**overrides: Any) -> ChangeV1:
    """An `unsubscribed` change, already normalised, so `decode(encode(c)) == c`.

    Each call gets a fresh `event_id` (the idempotency key) unless one is given.
    """
    fields: dict[str, Any] = {
        "event_id": uuid.uuid4(),
        "schema_version": 1,
        "type": "unsubscribed",
        "person": PersonRef(person_id="p-1001", email=EMAIL, salesforce_id=CONTACT_ID_18),
        "source": "sales",
        "actor": Actor(kind="recipient"),
        "channel": "email_link",
        "reason": None,
        "occurred_at": datetime(2024, 5, 1, 9, 30, tzinfo=UTC),
    }
    fields.update(overrides)
    return ChangeV1(**fields)


def good_message(**overrides: Any) -> dict[str, Any]:
    """The JSON object of a valid change, for tests that break the raw message."""
    message: dict[str, Any] = {
        "event_id": "7d3f2b9e-0c1a-4f5e-9b8d-2a6c4e1f0b37",
        "schema_version": 1,
        "type": "unsubscribed",
        "person": {"person_id": "p-1001", "email": EMAIL, "salesforce_id": CONTACT_ID_15},
        "source": "sales",
        "actor": {"kind": "recipient", "id": None, "name": None},
        "channel": "email_link",
        "reason": None,
        "occurred_at": "2024-05-01T11:30:00+02:00",
    }
    message.update(overrides)
    return message
