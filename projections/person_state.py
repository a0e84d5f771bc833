"""The answer for a person or an address as readers see it (command line, analytics): the one
answer of the opt-out rule, what decides it, and the history.

The structs are the shape `optout-sync person` prints and returns as JSON. `state_of` and
`lookup_address` build them from the aggregates: the oracle the read models are tested against
(`projections.person_view` builds the same answer from the read models, which is what the command
line reads).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

import msgspec

from domain.application import ChangeRecorder
from domain.identity import is_address
from domain.person import FIRST_CHANGES, Person, Standing
from domain.rule import Mark


class MarkView(msgspec.Struct, frozen=True, kw_only=True):
    occurred_at: datetime
    source: str
    event_id: str


class HistoryEntry(msgspec.Struct, frozen=True, kw_only=True):
    # a change: unsubscribed | unsubscribe_removed | person_linked; what Salesforce did with a
    # push: salesforce_accepted | salesforce_refused | push_waiting
    change: str
    source: str
    actor: str
    channel: str
    occurred_at: datetime
    recorded_at: datetime
    event_id: str
    reason: str | None = None
    address: str | None = None  # the key of the address the change named
    # Outcomes of the live push: the record asked for, the record and field written.
    record_id: str | None = None
    written_id: str | None = None
    field: str | None = None


class AddressView(msgspec.Struct, frozen=True, kw_only=True):
    key: str
    email: str | None  # None once erased (`optout-sync forget`)
    opted_out: bool


class PersonState(msgspec.Struct, frozen=True, kw_only=True):
    person_key: str
    kind: str  # person | address
    opted_out: bool  # the one answer: own changes, or any address the person carries
    own_opted_out: bool
    latest_unsubscribe: MarkView | None
    latest_removal: MarkView | None
    opted_out_by_addresses: list[str]  # keys of carried addresses that opt this person out
    addresses: list[AddressView]
    carried_by: list[str]  # for an address: the persons that carry it
    salesforce_id: str | None
    pending_link: bool
    version: int
    history: list[HistoryEntry]


class AddressLookup(msgspec.Struct, frozen=True, kw_only=True):
    """An email's answer: the address itself, and every person that carries it."""

    address: PersonState
    persons: list[PersonState]


_CHANGE_NAMES: dict[type, str] = {
    Person.Unsubscribed: "unsubscribed",
    Person.UnsubscribeRemoved: "unsubscribe_removed",
    Person.PersonLinked: "person_linked",
}
_CHANGE_NAMES.update({first: _CHANGE_NAMES[kind] for kind, first in FIRST_CHANGES.items()})


def state_of(log: ChangeRecorder, key: str) -> PersonState | None:
    """The answer for a person (`person:<id>`) or an address key; None if never seen."""
    person, answer = log.standing(key)
    carried_by = log.carriers(key) if is_address(key) else []
    if person is None and not carried_by:
        return None
    if is_address(key):
        addresses = [AddressView(key=key, email=log.address(key), opted_out=answer.opted_out)]
    else:
        assert person is not None
        addresses = [
            AddressView(
                key=mailbox,
                email=log.address(mailbox),
                opted_out=mailbox in answer.by_address,
            )
            for mailbox in person.mailboxes
        ]
    return _state(key, person, answer, log.history(key) if person else (), addresses, carried_by)


def lookup_address(log: ChangeRecorder, mailbox: str) -> AddressLookup | None:
    address = state_of(log, mailbox)
    if address is None:
        return None
    persons = [state_of(log, key) for key in address.carried_by]
    return AddressLookup(address=address, persons=[p for p in persons if p is not None])


def _state(
    key: str,
    person: Person | None,
    answer: Standing,
    events: Iterable[object],
    addresses: list[AddressView],
    carried_by: list[str],
) -> PersonState:
    history = [entry for entry in map(_entry, events) if entry is not None]
    return PersonState(
        person_key=key,
        kind="address" if is_address(key) else "person",
        opted_out=answer.opted_out,
        own_opted_out=person.own.opted_out if person is not None else False,
        latest_unsubscribe=_mark(answer.own.unsubscribe),
        latest_removal=_mark(answer.own.removal),
        opted_out_by_addresses=sorted(answer.by_address),
        addresses=addresses,
        carried_by=carried_by,
        salesforce_id=answer.salesforce_id,
        pending_link=answer.pending_link,
        version=person.version if person is not None else 0,
        history=history,
    )


def history_entry(event: object) -> HistoryEntry | None:
    """A stored event as a line of a person's history (None for events that are not one)."""
    return _entry(event)


def _entry(event: object) -> HistoryEntry | None:
    if isinstance(event, Person.Changed):
        return HistoryEntry(
            change=_CHANGE_NAMES[type(event)],
            source=event.source,
            actor=_actor(event),
            channel=event.channel,
            occurred_at=event.occurred_at,
            recorded_at=event.timestamp,
            event_id=str(event.event_id),
            reason=event.reason,
            address=event.mailbox,
        )
    pushed = {"source": "salesforce", "actor": "system:pusher", "channel": "api"}
    if isinstance(event, Person.OptOutAccepted):
        through = (
            f" (a converted Lead: written to Contact {event.converted_contact_id})"
            if event.converted_contact_id
            else ""
        )
        return HistoryEntry(
            change="salesforce_accepted",
            **pushed,
            occurred_at=event.accepted_at,
            recorded_at=event.timestamp,
            event_id=f"{event.originator_id}/{event.originator_version}",
            reason=f"{event.object_type} {event.record_id}: {event.field} = true{through}",
            record_id=event.record_id,
            written_id=event.written_id,
            field=event.field,
        )
    if isinstance(event, Person.OptOutRefused):
        retry = "retried later" if event.will_retry else "not retried"
        return HistoryEntry(
            change="salesforce_refused",
            **pushed,
            occurred_at=event.timestamp,
            recorded_at=event.timestamp,
            event_id=f"{event.originator_id}/{event.originator_version}",
            reason=f"{event.code}: {event.message} ({retry})",
            record_id=event.record_id,
        )
    if isinstance(event, Person.PushWaiting):
        detail = f": {event.detail}" if event.detail else ""
        return HistoryEntry(
            change="push_waiting",
            **pushed,
            occurred_at=event.timestamp,
            recorded_at=event.timestamp,
            event_id=f"{event.originator_id}/{event.originator_version}",
            reason=f"{event.reason}{detail}",
        )
    return None


def _mark(mark: Mark | None) -> MarkView | None:
    if mark is None:
        return None
    return MarkView(occurred_at=mark.occurred_at, source=mark.source, event_id=str(mark.event_id))


def _actor(event: Person.Changed) -> str:
    named = event.actor_name or event.actor_id
    return f"{event.actor_kind}:{named}" if named else event.actor_kind
