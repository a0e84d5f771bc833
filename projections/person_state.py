"""The per-person opt-out state as readers see it (command line, analytics)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

import msgspec

from domain.person import Person


class HistoryEntry(msgspec.Struct, frozen=True, kw_only=True):
    change: str  # unsubscribed | unsubscribe_removed | salesforce_linked
    source: str
    actor: str
    channel: str
    occurred_at: datetime
    recorded_at: datetime
    event_id: str
    reason: str | None = None


class PersonState(msgspec.Struct, frozen=True, kw_only=True):
    person_key: str
    opted_out: bool
    opted_out_at: datetime | None
    opted_out_source: str | None
    salesforce_id: str | None
    pending_link: bool
    version: int
    history: list[HistoryEntry]


_CHANGE_NAMES = {
    Person.Unsubscribed: "unsubscribed",
    Person.UnsubscribeRemoved: "unsubscribe_removed",
    Person.SalesforceLinked: "salesforce_linked",
}


def state_of(person: Person, events: Iterable[object]) -> PersonState:
    history = [
        HistoryEntry(
            change=_CHANGE_NAMES[type(event)],
            source=event.source,
            actor=_actor(event),
            channel=event.channel,
            occurred_at=event.occurred_at,
            recorded_at=event.timestamp,
            event_id=str(event.event_id),
            reason=event.reason,
        )
        for event in events
        if isinstance(event, Person.Changed)
    ]
    return PersonState(
        person_key=person.key,
        opted_out=person.opted_out,
        opted_out_at=person.opted_out_at,
        opted_out_source=person.opted_out_source,
        salesforce_id=person.salesforce_id,
        pending_link=person.pending_link,
        version=person.version,
        history=history,
    )


def _actor(event: Person.Changed) -> str:
    named = event.actor_name or event.actor_id
    return f"{event.actor_kind}:{named}" if named else event.actor_kind
