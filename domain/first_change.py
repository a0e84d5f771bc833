"""A new person's first change, stored without building the person: the stored events the
library's path (register the person, apply the change, map each event) would store, made
straight from the change.

Most changes the ingest sees create a person, and the aggregate and its event objects cost more
than the rest of the change together; nothing reads them before the next change of that person,
which loads it from the store like any other. tests/unit/test_first_change.py compares the two
paths byte for byte on every kind of change.
"""

from __future__ import annotations

from typing import Any

from eventsourcing.persistence import StoredEvent, Transcoder
from eventsourcing.utils import get_topic

from domain.identity import aggregate_id
from domain.person import Person
from domain.rule import ChangeKind

_PERSON = get_topic(Person)
_REGISTERED = get_topic(Person.Registered)
_TOPICS = {
    ChangeKind.UNSUBSCRIBED: get_topic(Person.Unsubscribed),
    ChangeKind.UNSUBSCRIBE_REMOVED: get_topic(Person.UnsubscribeRemoved),
    ChangeKind.PERSON_LINKED: get_topic(Person.PersonLinked),
}
_CHANGED_VERSION = Person.Changed.class_version
assert all(
    getattr(kind, "class_version", 1) == _CHANGED_VERSION
    for kind in (Person.Unsubscribed, Person.UnsubscribeRemoved, Person.PersonLinked)
)


def first_change_events(change: Any, transcoder: Transcoder) -> tuple[StoredEvent, StoredEvent]:
    """The two stored events of a new person's first change (`change`: a
    `domain.application.Change` the domain accepts; its provenance already free of addresses)."""
    provenance = change.provenance
    person_id = aggregate_id(change.person_key)
    now = Person.Registered.create_timestamp()
    registered = {"timestamp": now, "originator_topic": _PERSON, "key": change.person_key}
    state: dict[str, Any] = {
        "timestamp": now,
        "event_id": provenance.event_id,
        "source": provenance.source,
        "actor_kind": provenance.actor_kind,
        "actor_id": provenance.actor_id,
        "actor_name": provenance.actor_name,
        "channel": provenance.channel,
        # Never after the moment it is recorded (as Person's commands do).
        "occurred_at": min(provenance.occurred_at, now),
        "reason": provenance.reason,
        "mailbox": change.mailbox,
    }
    if change.kind is not ChangeKind.UNSUBSCRIBE_REMOVED:
        state["salesforce_id"] = change.salesforce_id
    if change.kind is ChangeKind.PERSON_LINKED:
        state["previous_salesforce_id"] = None  # a new person was linked to nothing
    state["class_version"] = _CHANGED_VERSION
    return (
        StoredEvent(person_id, 1, _REGISTERED, transcoder.encode(registered)),
        StoredEvent(person_id, 2, _TOPICS[change.kind], transcoder.encode(state)),
    )
