"""A new person's first change, stored without building the person: the one stored event the
library's path (register the person, apply the change, map the event: a `Person.FirstUnsubscribed`
or its siblings, which register the person and make the change) would store, made straight from
the change.

Most changes the ingest sees create a person, and the aggregate and its event objects cost more
than the rest of the change together; nothing reads them before the next change of that person,
which loads it from the store like any other. tests/unit/test_first_change.py compares the two
paths byte for byte on every kind of change.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any
from uuid import UUID

import msgspec
from eventsourcing.persistence import StoredEvent, Transcoder
from eventsourcing.utils import get_topic

from domain.identity import aggregate_id
from domain.person import FIRST_CHANGES, Person, change_fields
from domain.rule import ChangeKind

_PERSON = get_topic(Person)
_TOPICS = {
    ChangeKind.UNSUBSCRIBED: get_topic(FIRST_CHANGES[Person.Unsubscribed]),
    ChangeKind.UNSUBSCRIBE_REMOVED: get_topic(FIRST_CHANGES[Person.UnsubscribeRemoved]),
    ChangeKind.PERSON_LINKED: get_topic(FIRST_CHANGES[Person.PersonLinked]),
}
_CHANGED_VERSION = Person.Changed.class_version
assert all(getattr(kind, "class_version", 1) == _CHANGED_VERSION for kind in FIRST_CHANGES.values())


class FirstChanges:
    """Makes the stored events of new persons' first changes, in the transcoder's format.

    Where the transcoder writes eventsourcing's JSON format (UUIDs and datetimes tagged as its
    JSONTranscoder tags them: checked on a probe at construction), the tagged state is written
    straight by msgspec; otherwise each state goes through the transcoder.
    """

    def __init__(self, transcoder: Transcoder) -> None:
        self.transcoder = transcoder
        probe = {"timestamp": _PROBE_TIME, "event_id": _PROBE_ID, "key": "k", "n": None}
        try:
            self.direct = transcoder.encode(probe) == _ENCODE(_tagged(probe))
        except Exception:  # it cannot encode the probe's types by itself: the events decide
            self.direct = False

    def events(self, change: Any, provenance: Any) -> tuple[StoredEvent]:
        """The stored event of a new person's first change (`change`: a
        `domain.application.Change` the domain accepts; `provenance`: its provenance, free of
        addresses), in a tuple (a first change was once stored as two)."""
        now = Person.Registered.create_timestamp()
        # In the event's field order: the registration's, the change's, then the key.
        state = {
            "timestamp": now,
            "originator_topic": _PERSON,
            **change_fields(provenance, change.mailbox, now),
        }
        if change.kind is not ChangeKind.UNSUBSCRIBE_REMOVED:
            state["salesforce_id"] = change.salesforce_id
        if change.kind is ChangeKind.PERSON_LINKED:
            state["previous_salesforce_id"] = None  # a new person was linked to nothing
        state["key"] = change.person_key
        state["class_version"] = _CHANGED_VERSION
        if self.direct:
            stamp = {"_type_": "datetime_iso", "_data_": now.isoformat()}
            state["timestamp"] = stamp
            state["event_id"] = {"_type_": "uuid_hex", "_data_": provenance.event_id.hex}
            occurred = state["occurred_at"]
            state["occurred_at"] = (
                stamp
                if occurred is now
                else {"_type_": "datetime_iso", "_data_": occurred.isoformat()}
            )
            encoded = _ENCODE(state)
        else:
            encoded = self.transcoder.encode(state)
        return (StoredEvent(aggregate_id(change.person_key), 1, _TOPICS[change.kind], encoded),)


_ENCODE = msgspec.json.Encoder().encode
_PROBE_TIME = datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=timezone(timedelta(hours=-3)))
_PROBE_ID = UUID(int=12345)


def _tagged(state: dict[str, Any]) -> dict[str, Any]:
    tags = {datetime: ("datetime_iso", datetime.isoformat), UUID: ("uuid_hex", lambda u: u.hex)}
    tagged = {}
    for name, value in state.items():
        tag = tags.get(type(value))
        tagged[name] = value if tag is None else {"_type_": tag[0], "_data_": tag[1](value)}
    return tagged
