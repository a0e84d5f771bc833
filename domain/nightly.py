"""The nightly pass in the domain's words: every person at once, and what a Salesforce record whose
opt-out checkbox is checked becomes here.

- A checked record becomes an `unsubscribed` change (source `salesforce`, actor the system,
  channel `sync`) unless the person linked to it is already opted out here.
- Re-subscribes never sync (PRODUCT.md §1.4): a person whose unsubscribe was removed here but
  whose record is still checked gets the unsubscribe back, dated when the pass saw it, and the
  pass reports a conflict naming the record, so that someone unchecks it in Salesforce.
- A change's identity is derived from what it came from (record id, `SystemModstamp`, and the
  removal it answers), so a pass run twice, or again after a crash, records nothing twice: the
  store's index of recorded change ids refuses a repeated one.
- A person opted out here whose record is seen checked is proven in Salesforce: that is recorded
  as the acceptance (dated by the record's modstamp) instead of writing the record again.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from uuid import UUID

from eventsourcing.application import project_aggregate
from eventsourcing.persistence import Notification
from eventsourcing.utils import get_topic

from domain.application import Change, ChangeKind, ChangeRecorder
from domain.identity import AddressKeys, RecordType, person_key, record_type, to_18
from domain.person import FIRST_CHANGES, Person, Provenance, address_state, standing
from domain.push import Owed, owed_by

# Its own namespace: a pulled change's id never collides with a producer's random UUID.
PULL_NAMESPACE = uuid.UUID("a3f6e1d2-7c4b-4e8a-b5d9-0c1f2e3d4a5b")
SOURCE = "salesforce"
CHANNEL = "sync"
ACTOR_KIND = "system"
ACTOR_ID = "optout-sync:nightly"
ACTOR_NAME = "the nightly pass"
LOAD_CHUNK = 400  # persons read from the store per query


@dataclass(frozen=True)
class CheckedRecord:
    """A Contact or Lead whose opt-out checkbox Salesforce says is checked."""

    record_id: str  # 18 characters
    modstamp: datetime  # its SystemModstamp
    email: str | None = None

    @property
    def object_type(self) -> RecordType:
        return record_type(self.record_id)


@dataclass(frozen=True)
class Conflict:
    """Removed here, still checked in Salesforce: someone has to uncheck the record."""

    record_id: str
    person_key: str


@dataclass(frozen=True)
class Observed:
    """A person opted out here whose record is already checked in Salesforce."""

    key: str
    record_id: str
    modstamp: datetime


@dataclass
class PullPlan:
    changes: list[tuple[CheckedRecord, Change]] = field(default_factory=list)
    conflicts: list[Conflict] = field(default_factory=list)
    observed: list[Observed] = field(default_factory=list)
    known: int = 0  # checked records whose person is already opted out here


def change_id(record_id: str, modstamp: datetime, answers: UUID | None) -> UUID:
    """The identity of a pulled change: the record, the modstamp it was read at, and the removal
    it answers (so an unsubscribe brought back after a later removal is a new change)."""
    stamp = modstamp.isoformat(timespec="milliseconds")
    return uuid.uuid5(PULL_NAMESPACE, f"{to_18(record_id)}|{stamp}|{answers or ''}")


class Persons:
    """Every person and address of the store, with their one answer, read in one sweep."""

    def __init__(self, persons: Iterable[Person], written: dict[str, str] | None = None) -> None:
        self.by_key: dict[str, Person] = {person.key: person for person in persons}
        carriers: dict[str, list[Person]] = {}
        for person in self.by_key.values():
            for mailbox in person.mailboxes:
                carriers.setdefault(mailbox, []).append(person)
        self.carried = set(carriers)
        addresses = {
            key: address_state(self.by_key.get(key), key, carriers.get(key, ()))
            for key in carriers.keys() | {k for k, p in self.by_key.items() if p.is_address}
        }
        self.opted_out: dict[str, bool] = {}
        for key, person in self.by_key.items():
            if person.is_address:
                self.opted_out[key] = addresses[key].opted_out
            else:
                states = {mailbox: addresses[mailbox] for mailbox in person.mailboxes}
                self.opted_out[key] = standing(person, states).opted_out
        self.by_record: dict[str, list[str]] = {}
        for key, person in self.by_key.items():
            if person.salesforce_id:
                self.by_record.setdefault(to_18(person.salesforce_id), []).append(key)
        # A converted Lead's contact, written by a push for the Lead's person, is that person's.
        for record_id, key in (written or {}).items():
            if key in self.by_key and key not in self.by_record.get(record_id, []):
                self.by_record.setdefault(record_id, []).append(key)

    @classmethod
    def read(cls, store: ChangeRecorder) -> Persons:
        written: dict[str, str] = {}
        return cls(list(read_persons(store, written)), written)

    def owed(self) -> list[Owed]:
        """Every push owed (or waiting for a link), by the live push's own rule."""
        found = []
        for key, person in self.by_key.items():
            owed = owed_by(person, self.opted_out[key], partial(self.carried.__contains__, key))
            if owed is not None:
                found.append(owed)
        return found

    def removed(self, key: str) -> bool:
        """Not opted out, because an unsubscribe of their own was removed."""
        person = self.by_key.get(key)
        return person is not None and not self.opted_out[key] and person.own.removal is not None

    def plan_pull(
        self, records: Iterable[CheckedRecord], keys: AddressKeys, seen_at: datetime
    ) -> PullPlan:
        """What the checked records become here (see the module's rules)."""
        latest: dict[str, CheckedRecord] = {}
        for record in records:
            held = latest.get(record.record_id)
            if held is None or record.modstamp > held.modstamp:
                latest[record.record_id] = record
        plan = PullPlan()
        for record in latest.values():
            linked = self.by_record.get(record.record_id, [])
            opted_out = [key for key in linked if self.opted_out[key]]
            if opted_out:
                plan.known += 1
                plan.observed.extend(
                    Observed(key, record.record_id, record.modstamp)
                    for key in opted_out
                    if self._own_record(key) == record.record_id
                    and self.by_key[key].accepted_record != record.record_id
                )
                continue
            removed = [key for key in linked if self.removed(key)]
            candidates = removed or linked
            target = candidates[0] if candidates else None
            plan.changes.append((record, self._change(record, target, keys, seen_at)))
            if target is not None and removed:
                plan.conflicts.append(Conflict(record.record_id, target))
        return plan

    def _own_record(self, key: str) -> str | None:
        linked = self.by_key[key].salesforce_id
        return to_18(linked) if linked else None

    def _change(
        self, record: CheckedRecord, target: str | None, keys: AddressKeys, seen_at: datetime
    ) -> Change:
        removal = self.by_key[target].own.removal if target is not None else None
        # A removal's answer is dated when the pass saw the box checked: the vendor's rule
        # brings the unsubscribe back, whatever the record's modstamp says.
        occurred_at = seen_at if removal is not None else record.modstamp
        provenance = Provenance(
            event_id=change_id(
                record.record_id, record.modstamp, removal.event_id if removal else None
            ),
            source=SOURCE,
            actor_kind=ACTOR_KIND,
            actor_id=ACTOR_ID,
            actor_name=ACTOR_NAME,
            channel=CHANNEL,
            occurred_at=occurred_at,
        )
        if target is not None:
            mailbox = target if self.by_key[target].is_address else None
            return Change(
                kind=ChangeKind.UNSUBSCRIBED,
                person_key=target,
                provenance=provenance,
                mailbox=mailbox,
                salesforce_id=record.record_id,
            )
        # Not known here: a person keyed by the record, carrying its address (kept in clear
        # only in the erasable index, as the ingest does).
        email = record.email or None
        return Change(
            kind=ChangeKind.UNSUBSCRIBED,
            person_key=person_key(record.record_id),
            provenance=provenance,
            mailbox=keys.key_of(email) if email else None,
            email=email,
            salesforce_id=record.record_id,
        )


def read_persons(store: ChangeRecorder, written: dict[str, str]) -> Iterator[Person]:
    """Every person and address in the store, read by histories a chunk at a time; `written`
    gains each record a push wrote instead of the person's own (a converted Lead's contact)."""
    ids: list[UUID] = []
    # A new person's first change registers them too.
    registrations: list[type] = [Person.Registered, *FIRST_CHANGES.values()]
    for notification in _notifications(store, [get_topic(kind) for kind in registrations]):
        ids.append(_uuid(notification.originator_id))
        if len(ids) >= LOAD_CHUNK:
            yield from _project(store, ids, written)
            ids = []
    if ids:
        yield from _project(store, ids, written)


def _project(
    store: ChangeRecorder, ids: Sequence[UUID], written: dict[str, str]
) -> Iterator[Person]:
    histories = store.index.histories(ids)
    for person_id in ids:
        stored = histories.get(person_id)
        if stored:
            events = [store.mapper.to_domain_event(event) for event in stored]
            person = project_aggregate(None, events)
            if isinstance(person, Person):
                for event in events:
                    if (
                        isinstance(event, Person.OptOutAccepted)
                        and event.written_id != event.record_id
                    ):
                        written[event.written_id] = person.key
                yield person


def _notifications(
    store: ChangeRecorder, topics: Sequence[str], start: int | None = None
) -> Iterator[Notification]:
    page = 1000
    while True:
        found = store.recorder.select_notifications(
            start, page, topics=topics, inclusive_of_start=start is None
        )
        yield from found
        if len(found) < page:
            return
        start = found[-1].id


def removed_since(store: ChangeRecorder, position: int) -> set[UUID]:
    """The persons with an unsubscribe removed after this log position."""
    topics = [get_topic(Person.UnsubscribeRemoved)]
    start = position if position > 0 else None
    return {
        _uuid(notification.originator_id)
        for notification in _notifications(store, topics, start)
        if start is None or notification.id > start
    }


def _uuid(value: UUID | str) -> UUID:
    return value if isinstance(value, UUID) else UUID(value)


def log_position(store: ChangeRecorder) -> int:
    """The event log's last notification id (0 when empty)."""
    return store.recorder.max_notification_id() or 0
