"""Changes stored without applying them to a person: the one stored event the library's path
(apply the change to the person, map the event) would store, made straight from the change.

- A new person's first change (`FirstChanges.events`): a `Person.FirstUnsubscribed` or its
  siblings, which register the person and make the change. Most changes the ingest sees create a
  person, and the aggregate and its event objects cost more than the rest of the change together.
- A stored person's one change in a batch (`FirstChanges.next_event`): the person is loaded (so a
  history this version cannot read still fails its change), but not changed, mapped or cached.

Nothing reads those persons before their next change, which loads them from the store like any
other. tests/unit/test_first_change.py compares the paths byte for byte on every kind of change.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from uuid import UUID

import msgspec
from eventsourcing.persistence import StoredEvent, Transcoder
from eventsourcing.utils import get_topic

from domain.identity import aggregate_id
from domain.person import FIRST_CHANGES, Person, change_fields
from domain.rule import ChangeKind

_PERSON = get_topic(Person)
_KINDS = {
    ChangeKind.UNSUBSCRIBED: Person.Unsubscribed,
    ChangeKind.UNSUBSCRIBE_REMOVED: Person.UnsubscribeRemoved,
    ChangeKind.PERSON_LINKED: Person.PersonLinked,
}
_TOPICS = {kind: get_topic(FIRST_CHANGES[event]) for kind, event in _KINDS.items()}
_NEXT_TOPICS = {kind: get_topic(event) for kind, event in _KINDS.items()}
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
        _add_link_fields(state, change, None)  # a new person was linked to nothing
        state["key"] = change.person_key
        state["class_version"] = _CHANGED_VERSION
        encoded = self._encoded(state, now)
        return (StoredEvent(aggregate_id(change.person_key), 1, _TOPICS[change.kind], encoded),)

    def next_event(
        self,
        person_id: UUID,
        version: int,
        change: Any,
        provenance: Any,
        salesforce_id: str | None = None,
    ) -> StoredEvent:
        """The stored event of a change to a stored person at `version` (not changed since): the
        event the person would trigger, at the next version (`salesforce_id`: the person's, which
        a link names as the previous one)."""
        now = Person.Changed.create_timestamp()
        state = {"timestamp": now, **change_fields(provenance, change.mailbox, now)}
        _add_link_fields(state, change, salesforce_id)
        state["class_version"] = _CHANGED_VERSION
        encoded = self._encoded(state, now)
        return StoredEvent(person_id, version + 1, _NEXT_TOPICS[change.kind], encoded)

    def _encoded(self, state: dict[str, Any], now: datetime) -> bytes:
        if not self.direct:
            return self.transcoder.encode(state)
        stamp = {"_type_": "datetime_iso", "_data_": isoformat(now)}
        state["timestamp"] = stamp
        state["event_id"] = {"_type_": "uuid_hex", "_data_": state["event_id"].hex}
        occurred = state["occurred_at"]
        state["occurred_at"] = (
            stamp if occurred is now else {"_type_": "datetime_iso", "_data_": isoformat(occurred)}
        )
        return _ENCODE(state)


_ENCODE = msgspec.json.Encoder().encode


def _add_link_fields(state: dict[str, Any], change: Any, previous: str | None) -> None:
    """The Salesforce fields of the change's event, in their order: an unsubscribe's and a
    link's id, and a link's previous one (`previous`)."""
    if change.kind is not ChangeKind.UNSUBSCRIBE_REMOVED:
        state["salesforce_id"] = change.salesforce_id
    if change.kind is ChangeKind.PERSON_LINKED:
        state["previous_salesforce_id"] = previous


def isoformat(moment: datetime) -> str:
    """`moment.isoformat()`, several times faster for a time in UTC (msgspec writes RFC 3339,
    which differs only in its "Z"; tests/unit/test_first_change.py checks them against each
    other)."""
    if moment.tzinfo is UTC:
        return _ENCODE(moment)[1:-2].decode() + "+00:00"
    return moment.isoformat()


_PROBE_TIME = datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=timezone(timedelta(hours=-3)))
_PROBE_ID = UUID(int=12345)


def _tagged(state: dict[str, Any]) -> dict[str, Any]:
    tags = {datetime: ("datetime_iso", datetime.isoformat), UUID: ("uuid_hex", lambda u: u.hex)}
    tagged = {}
    for name, value in state.items():
        tag = tags.get(type(value))
        tagged[name] = value if tag is None else {"_type_": tag[0], "_data_": tag[1](value)}
    return tagged
