"""The person aggregate: one per person, holding their opt-out state and its full history.

Rules kept here:
- every accepted change is stored exactly once: a change whose inbound event id was seen is ignored;
- unsubscribe wins: a repeated unsubscribe is kept for the audit but does not flip state;
- removing an unsubscribe is deliberate and audited (actor and reason) and is never synced;
- state follows when changes happened, not when they arrived: an unsubscribe that occurred
  before a removal, or a removal that occurred before the unsubscribe it would undo, is kept
  for the audit only (changes of one person can reach us through different partitions);
- a person without a Salesforce id is "pending link" until one arrives.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate

from domain.identity import aggregate_id, record_type


@dataclass(frozen=True)
class Provenance:
    """Who made a change, through which source and channel, when, and under which inbound id."""

    event_id: UUID
    source: str
    actor_kind: str
    actor_id: str | None
    actor_name: str | None
    channel: str
    occurred_at: datetime
    reason: str | None = None


class Person(Aggregate):
    class Registered(Aggregate.Created):
        key: str

    class Changed(Aggregate.Event):
        """Fields every recorded change carries: its provenance."""

        event_id: UUID
        source: str
        actor_kind: str
        actor_id: str | None
        actor_name: str | None
        channel: str
        occurred_at: datetime
        reason: str | None

    class Unsubscribed(Changed):
        email: str | None
        salesforce_id: str | None

        def apply(self, person: Person) -> None:
            person.seen_event_ids.add(self.event_id)
            if self.email:
                person.email = self.email
            if self.salesforce_id:
                person.salesforce_id = self.salesforce_id
            if person.removed_at is not None and self.occurred_at <= person.removed_at:
                return  # it happened before the removal that is now in force
            if not person.opted_out:  # unsubscribe wins: the first stands, repeats are audit only
                person.opted_out = True
                person.opted_out_at = self.occurred_at
                person.opted_out_source = self.source

    class UnsubscribeRemoved(Changed):
        def apply(self, person: Person) -> None:
            person.seen_event_ids.add(self.event_id)
            if person.opted_out_at is not None and self.occurred_at < person.opted_out_at:
                return  # it happened before the unsubscribe now in force, which stands
            person.opted_out = False
            person.opted_out_at = None
            person.opted_out_source = None
            person.removed_at = max(person.removed_at or self.occurred_at, self.occurred_at)

    class SalesforceLinked(Changed):
        salesforce_id: str
        previous_salesforce_id: str | None

        def apply(self, person: Person) -> None:
            person.seen_event_ids.add(self.event_id)
            person.salesforce_id = self.salesforce_id

    @staticmethod
    def create_id(key: str) -> UUID:
        return aggregate_id(key)

    @classmethod
    def register(cls, key: str) -> Person:
        """A new person: the same as `Person(key)`, without the metaclass's argument matching
        (half the cost, on the ingest's hot path)."""
        return cls._create(cls.Registered, id=aggregate_id(key), key=key)

    def __init__(self, key: str) -> None:
        self.key = key
        self.opted_out = False
        self.opted_out_at: datetime | None = None
        self.opted_out_source: str | None = None
        self.removed_at: datetime | None = None
        self.email: str | None = None
        self.salesforce_id: str | None = None
        self.seen_event_ids: set[UUID] = set()

    @property
    def pending_link(self) -> bool:
        return self.opted_out and self.salesforce_id is None

    def has_seen(self, event_id: UUID) -> bool:
        return event_id in self.seen_event_ids

    # Commands: each returns False when the change was already recorded (a redelivery).

    def unsubscribe(
        self, how: Provenance, email: str | None = None, salesforce_id: str | None = None
    ) -> bool:
        if self.has_seen(how.event_id):
            return False
        if salesforce_id is not None:
            record_type(salesforce_id)
        self.trigger_event(
            self.Unsubscribed, **_fields(how), email=email, salesforce_id=salesforce_id
        )
        return True

    def remove_unsubscribe(self, how: Provenance) -> bool:
        if self.has_seen(how.event_id):
            return False
        if how.actor_kind != "user" or not how.actor_id or not how.reason:
            raise ValueError("removing an unsubscribe needs a named user and a reason")
        self.trigger_event(self.UnsubscribeRemoved, **_fields(how))
        return True

    def link_salesforce(self, how: Provenance, salesforce_id: str) -> bool:
        if self.has_seen(how.event_id):
            return False
        record_type(salesforce_id)
        self.trigger_event(
            self.SalesforceLinked,
            **_fields(how),
            salesforce_id=salesforce_id,
            previous_salesforce_id=self.salesforce_id,
        )
        return True


def _fields(how: Provenance) -> dict[str, Any]:
    return {
        "event_id": how.event_id,
        "source": how.source,
        "actor_kind": how.actor_kind,
        "actor_id": how.actor_id,
        "actor_name": how.actor_name,
        "channel": how.channel,
        "occurred_at": how.occurred_at,
        "reason": how.reason,
    }
