"""The application service that records changes: a batch of changes, stored atomically with the
position it came from, so that a redelivered batch writes nothing."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any
from uuid import UUID

from eventsourcing.application import (
    AggregateNotFoundError,
    ProcessingEvent,
    project_aggregate,
)
from eventsourcing.persistence import PersistenceError, StoredEvent, Tracking
from eventsourcing.projection import EventSourcedProjection
from eventsourcing.utils import get_topic

from domain.identity import aggregate_id, record_type
from domain.input_gap import InputGap
from domain.person import Person, Provenance


# The inbound contract's `type` is this enum itself: the wire and the domain have one list.
class ChangeKind(StrEnum):
    """What a change does (an inbound message's `type`)."""

    UNSUBSCRIBED = "unsubscribed"
    UNSUBSCRIBE_REMOVED = "unsubscribe_removed"
    PERSON_LINKED = "person_linked"


@dataclass(frozen=True)
class Change:
    """One requested change to one person, in the domain's words."""

    kind: ChangeKind
    person_key: str
    how: Provenance
    email: str | None = None
    salesforce_id: str | None = None


@dataclass
class ChangeBatch:
    """Changes recorded together in one transaction; counts are filled in by recording."""

    changes: Sequence[Change]
    recorded: int = 0
    duplicates: int = 0
    persons: dict[UUID, Person] = field(default_factory=dict)
    # Stored events read for the batch in one query, projected when a change first needs them.
    unprojected: dict[UUID, Sequence[StoredEvent]] = field(default_factory=dict)

    @property
    def person_ids(self) -> set[UUID]:
        return {aggregate_id(change.person_key) for change in self.changes}


class ChangesFailed(Exception):
    """Some changes of a batch raised in the domain (by index); nothing of the batch was recorded.

    Only the first failure of each person is reported: its later changes are not tried, because
    a command that raised may have left the person half changed.
    """

    def __init__(self, failures: Mapping[int, Exception]) -> None:
        super().__init__(f"{len(failures)} changes failed in the domain")
        self.failures = dict(failures)


_CHANGE_TOPICS = [
    get_topic(kind)
    for kind in (Person.Unsubscribed, Person.UnsubscribeRemoved, Person.SalesforceLinked)
]

# A port: the stored events of many persons in one read (the store adapter provides it).
StoredEventsOf = Callable[[Collection[UUID]], Mapping[UUID, Sequence[StoredEvent]]]


class OptOutLog(EventSourcedProjection[UUID]):
    """The event log of every person's opt-out changes."""

    name = "optout"
    # When set, a batch loads all its persons in one read instead of one read per person.
    stored_events_of: StoredEventsOf | None = None

    def record(self, changes: Sequence[Change], position: Tracking | None = None) -> ChangeBatch:
        """Stores the changes (and the position they came from) in one transaction.

        Raises eventsourcing's IntegrityError when the position was already recorded or a
        person was changed concurrently: nothing is written then.
        """
        batch = ChangeBatch(changes)
        self.process_event(batch, position)  # type: ignore[arg-type]
        return batch

    def record_gap(self, source: str, first: int, last: int, accepted_by: str) -> InputGap:
        """Records that positions `first`..`last` of `source` will never be recorded, and moves
        the source's position past them, in one transaction."""
        gap = InputGap(source, first, last, accepted_by)
        processing_event = ProcessingEvent[UUID](Tracking(source, last))
        processing_event.collect_events(gap)
        self._record(processing_event)
        return gap

    def gaps(self) -> Iterator[InputGap.Accepted]:
        """Every accepted gap, in the order they were recorded."""
        for notification in self._all_notifications(topics=[get_topic(InputGap.Accepted)]):
            event = self.mapper.to_domain_event(notification)
            assert isinstance(event, InputGap.Accepted)
            yield event

    def policy(self, domain_event: Any, processing_event: ProcessingEvent[UUID]) -> None:
        batch: ChangeBatch = domain_event
        self._load_persons(batch)
        failures: dict[int, Exception] = {}
        broken: set[UUID] = set()
        for index, change in enumerate(batch.changes):
            person_id = aggregate_id(change.person_key)
            if person_id in broken:
                continue  # tried again in the next attempt, on a person read afresh
            try:
                applied = _apply(self._person_for(batch, change.person_key), change)
            except PersistenceError:
                raise  # the store's trouble, not this change's
            except Exception as error:  # whatever the cause, it is this change that fails
                failures[index] = error
                broken.add(person_id)
                continue
            if applied:
                batch.recorded += 1
            else:
                batch.duplicates += 1
        if failures:
            raise ChangesFailed(failures)
        for person_id, person in batch.persons.items():
            # Collected by hand: collect_events() checks a runtime Protocol per item, which is slow.
            processing_event.events.extend(person.collect_events())
            processing_event.aggregates[person_id] = person

    def person(self, key: str) -> Person | None:
        try:
            person: Person = self.repository.get(aggregate_id(key))
        except AggregateNotFoundError:
            return None
        return person

    def history(self, key: str) -> Iterator[Person.Event]:
        """Every stored event of a person, oldest first."""
        yield from self.events.get(aggregate_id(key))  # type: ignore[misc]

    def all_changes(self, page: int = 1000) -> Iterator[Person.Changed]:
        """Every recorded change of every person, in the order they were stored."""
        for notification in self._all_notifications(page, _CHANGE_TOPICS):
            event = self.mapper.to_domain_event(notification)
            assert isinstance(event, Person.Changed)
            yield event

    def _all_notifications(self, page: int = 1000, topics: Sequence[str] = ()) -> Iterator[Any]:
        """The stored events of these topics, in order (read by topic: an event of a type this
        version does not know, written by a newer one, is left alone)."""
        if page < 1:
            raise ValueError("page must be at least 1")
        start: int | None = None
        while True:
            notifications = self.recorder.select_notifications(
                start, page, topics=topics, inclusive_of_start=start is None
            )
            yield from notifications
            if len(notifications) < page:
                return
            start = notifications[-1].id

    def positions(self, sources: Iterable[str]) -> dict[str, int]:
        """The last recorded position of each source, -1 where none is recorded yet."""
        recorded = {source: self.position(source) for source in sources}
        return {source: -1 if at is None else at for source, at in recorded.items()}

    def forget_persons(self, person_ids: Iterable[UUID]) -> None:
        """Drops these persons from the cache: after a failed write (the cached objects may hold
        events that were never stored), or when another writer may change them."""
        cache = self.repository.cache
        if cache is None:
            return
        for person_id in person_ids:
            with contextlib.suppress(KeyError):
                cache.get(person_id, evict=True)

    def position(self, source: str) -> int | None:
        """The last recorded position (e.g. Kafka offset) of a source like `topic:partition`."""
        return self.recorder.max_tracking_id(source)

    def _load_persons(self, batch: ChangeBatch) -> None:
        """Loads every person the batch touches in one read, when the store offers it."""
        if self.stored_events_of is None:
            return
        keys = {aggregate_id(change.person_key): change.person_key for change in batch.changes}
        cache = self.repository.cache
        if cache is not None:
            for person_id in list(keys):
                try:
                    cached = cache.get(person_id)
                except KeyError:
                    continue
                assert isinstance(cached, Person)
                batch.persons[person_id] = cached
                del keys[person_id]
        stored = self.stored_events_of(list(keys)) if keys else {}
        for person_id, key in keys.items():
            if person_id in stored:
                batch.unprojected[person_id] = stored[person_id]
            else:
                batch.persons[person_id] = Person.register(key)

    def _person_for(self, batch: ChangeBatch, key: str) -> Person:
        person_id = aggregate_id(key)
        if person_id not in batch.persons:
            stored = batch.unprojected.pop(person_id, None)
            if stored is not None:
                # Projected here, so that a history this version cannot read fails its change only.
                person = project_aggregate(None, map(self.mapper.to_domain_event, stored))
                if not isinstance(person, Person):
                    raise TypeError(f"the stored history of {key} is not a person's")
                batch.persons[person_id] = person
            else:
                batch.persons[person_id] = self.person(key) or Person.register(key)
        return batch.persons[person_id]


def problem(change: Change) -> str | None:
    """Why the domain would refuse this change, checked before anything is recorded."""
    how = change.how
    if change.kind is ChangeKind.UNSUBSCRIBE_REMOVED and not (
        how.actor_kind == "user" and how.actor_id and how.reason
    ):
        return "removing an unsubscribe needs a named user (actor.kind user, actor.id) and a reason"
    if change.kind is ChangeKind.PERSON_LINKED and not change.salesforce_id:
        return "linking a person needs a Salesforce id"
    if change.salesforce_id is not None:
        try:
            record_type(change.salesforce_id)
        except ValueError as error:
            return str(error)
    return None


def _apply(person: Person, change: Change) -> bool:
    if change.kind is ChangeKind.UNSUBSCRIBED:
        return person.unsubscribe(
            change.how, email=change.email, salesforce_id=change.salesforce_id
        )
    if change.kind is ChangeKind.UNSUBSCRIBE_REMOVED:
        return person.remove_unsubscribe(change.how)
    if change.salesforce_id is None:
        raise ValueError("linking a person needs a Salesforce id")
    return person.link_salesforce(change.how, change.salesforce_id)
