"""The application service that records changes: a batch of changes, stored atomically with the
position it came from, so that a redelivered batch writes nothing."""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any
from uuid import UUID

from eventsourcing.application import (
    AggregateNotFoundError,
    Cache,
    LRUCache,
    ProcessingEvent,
    project_aggregate,
)
from eventsourcing.persistence import StoredEvent, Tracking
from eventsourcing.projection import EventSourcedProjection

from domain.identity import aggregate_id, record_type
from domain.person import Person, Provenance


class ChangeKind(StrEnum):
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

    def policy(self, domain_event: Any, processing_event: ProcessingEvent[UUID]) -> None:
        batch: ChangeBatch = domain_event
        self._load_persons(batch)
        for change in batch.changes:
            person = self._person_for(batch, change.person_key)
            if _apply(person, change):
                batch.recorded += 1
            else:
                batch.duplicates += 1
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
        if page < 1:
            raise ValueError("page must be at least 1")
        start: int | None = None
        while True:
            notifications = self.recorder.select_notifications(
                start, page, inclusive_of_start=start is None
            )
            for notification in notifications:
                event = self.mapper.to_domain_event(notification)
                if isinstance(event, Person.Changed):
                    yield event
            if len(notifications) < page:
                return
            start = notifications[-1].id

    def positions(self, sources: Iterable[str]) -> dict[str, int]:
        """The last recorded position of each source, -1 where none is recorded yet."""
        recorded = {source: self.position(source) for source in sources}
        return {source: -1 if at is None else at for source, at in recorded.items()}

    def forget_cached_persons(self) -> None:
        """After a failed write: cached aggregates may hold events that were never stored."""
        cache = self.repository.cache
        if isinstance(cache, LRUCache):
            self.repository.cache = LRUCache(maxsize=cache.maxsize)
        elif cache is not None:
            self.repository.cache = Cache()

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
                events = map(self.mapper.to_domain_event, stored[person_id])
                person = project_aggregate(None, events)
                assert isinstance(person, Person)
                batch.persons[person_id] = person
            else:
                batch.persons[person_id] = Person.register(key)

    def _person_for(self, batch: ChangeBatch, key: str) -> Person:
        person_id = aggregate_id(key)
        if person_id not in batch.persons:
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
