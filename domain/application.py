"""The application service that records changes: a batch of changes, stored atomically with the
position it came from, so that a redelivered batch writes nothing; and the readers of one
person's or one address's answer.

Beside the log, in the same transaction, the store keeps an index (the `Index` port): the event id
of every recorded change (so the same change arriving under another key is recognised), which
persons carry which address, and each address in clear — the one erasable place it lives.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable
from uuid import UUID

import msgspec
from eventsourcing.application import (
    AggregateNotFoundError,
    ProcessingEvent,
)
from eventsourcing.domain import Snapshot
from eventsourcing.persistence import (
    IntegrityError,
    JSONTranscoder,
    PersistenceError,
    StoredEvent,
    Tracking,
)
from eventsourcing.projection import EventSourcedProjection
from eventsourcing.utils import get_topic

from domain.first_change import FirstChanges
from domain.identity import aggregate_id, is_address, record_type
from domain.input_gap import InputGap
from domain.person import (
    Person,
    Provenance,
    Standing,
    address_state,
    standing,
    stored_topics,
)
from domain.rule import ChangeKind, MarkAsDict, OptOut, OptOutAsDict

__all__ = [
    "Change",
    "ChangeBatch",
    "ChangeKind",
    "ChangeRecorder",
    "ChangesFailed",
    "Index",
    "refusal_of",
]

log = logging.getLogger(__name__)
SNAPSHOT_EVERY = 100  # events: a person with 10,000 changes loads like one with 100
OUTLINES_MAX = 200_000  # persons a writer remembers in outline (as many as it caches)

# What a writer remembers of a person it stored a change of without building them: their version
# and the addresses they carry (in the order carried), enough for their next unsubscribe or
# removal to be stored as made, without reading them.
Outline = tuple[int, tuple[str, ...]]
# Anything that looks like an email address, in free text that is stored for good.
_ADDRESS_LIKE = re.compile(r"[^\s@<>()\[\],;:\"']+@[^\s@<>()\[\],;:\"']+")


class Change(msgspec.Struct, frozen=True):
    """One requested change, in the domain's words. `person_key` is `person:<id>`, or the
    address key when the change names only an email; `mailbox` is the key of the address it
    names, `email` that address in clear (kept only in the erasable index)."""

    kind: ChangeKind
    person_key: str
    provenance: Provenance
    mailbox: str | None = None
    email: str | None = None
    salesforce_id: str | None = None


@dataclass
class ChangeBatch:
    """Changes recorded together in one transaction; counts are filled in by recording."""

    changes: Sequence[Change]
    recorded: int = 0
    duplicates: int = 0
    persons: dict[UUID, Person] = field(default_factory=dict)
    # Look the change ids up before applying (after the store refused an optimistic attempt).
    look_up_recorded: bool = False
    # Stored events read for the batch in one query, projected when a change first needs them.
    unprojected: dict[UUID, Sequence[StoredEvent]] = field(default_factory=dict)
    # New persons (by key) whose one change in the batch is stored without building them.
    firsts: set[str] = field(default_factory=set)
    # Stored persons (by key) whose one change in the batch is stored without applying it.
    loaded_once: set[str] = field(default_factory=set)
    # Persons remembered in outline whose one change in the batch may be stored as made.
    outlined: dict[UUID, Outline] = field(default_factory=dict)
    # The outlines of the persons this batch stores as made, once it is stored.
    noted: dict[UUID, Outline] = field(default_factory=dict)

    def touched(self) -> set[UUID]:
        """The persons the batch may have changed in memory (to forget if it is not stored)."""
        return {*self.persons, *self.outlined, *self.noted}


class ChangesFailed(Exception):
    """Some changes of a batch raised in the domain (by index); nothing of the batch was recorded.

    Only the first failure of each person is reported: its later changes are not tried, because
    a command that raised may have left the person half changed.
    """

    def __init__(self, failures: Mapping[int, Exception]) -> None:
        super().__init__(f"{len(failures)} changes failed in the domain")
        self.failures = dict(failures)


@runtime_checkable
class Index(Protocol):
    """What the store keeps beside the log, written in the same transaction as a batch's events
    (`record` passes `change_ids`, `addresses` and `carriers` to the recorder)."""

    def recorded_changes(self, event_ids: Collection[UUID]) -> set[UUID]:
        """Which of these inbound event ids are already recorded."""

    def histories(self, ids: Collection[UUID]) -> Mapping[UUID, Sequence[StoredEvent]]:
        """For each aggregate: its latest snapshot (if any) and the events after it, in order."""

    def address(self, mailbox: str) -> str | None:
        """The clear address of a mailbox key, unless erased."""

    def carriers(self, mailbox: str) -> list[str]:
        """The keys of the persons that carry this address."""

    def erase_address(self, mailbox: str) -> bool:
        """Deletes the clear address for good; True if there was one."""


_CHANGE_CLASSES = (Person.Unsubscribed, Person.UnsubscribeRemoved, Person.PersonLinked)
# Read by topic, including the names changes were stored under before a rename, and a new
# person's first change (one event that registers them and is the change).
_CHANGE_TOPICS = stored_topics(_CHANGE_CLASSES)


class ChangeRecorder(EventSourcedProjection[UUID]):
    """Records changes to persons and addresses, and reads their answers."""

    name = "optout"
    snapshotting_intervals = {Person: SNAPSHOT_EVERY}

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        super().__init__(env)
        if not isinstance(self.recorder, Index):
            raise TypeError(
                f"{type(self.recorder).__name__} does not keep the index beside the log "
                "(set PROCESS_RECORDER_TOPIC to one of adapters.event_store's recorders)"
            )
        self.index: Index = self.recorder
        # Stored as made, unless the mapper compresses or encrypts (then the library's path).
        self._direct = not (self.mapper.compressor or self.mapper.cipher)
        self._firsts = FirstChanges(self.mapper.transcoder)
        # A writer's outlines (domain.first_change), trusted as its cache is: a stale one is
        # refused by the store's version check, and then forgotten like a cached person.
        writer = self.repository.cache is not None and not self.repository.fastforward
        self._outlines: dict[UUID, Outline] | None = {} if writer and self._direct else None

    def register_transcodings(self, transcoder: JSONTranscoder) -> None:
        super().register_transcodings(transcoder)
        transcoder.register(MarkAsDict())
        transcoder.register(OptOutAsDict())

    def record(self, changes: Sequence[Change], position: Tracking | None = None) -> ChangeBatch:
        """Stores the changes (and the position they came from) in one transaction.

        Raises eventsourcing's IntegrityError when the position was already recorded, a person
        was changed concurrently or a change was recorded concurrently under another key:
        nothing is written then.
        """
        batch = ChangeBatch(changes)
        try:
            # Optimistic: a change recorded before is rare (redelivery is caught by the position),
            # and the unique index of change ids refuses it if it comes.
            self.process_event(batch, position)  # type: ignore[arg-type]
        except IntegrityError:
            self.forget_persons(batch.touched())  # they may hold events never stored
            batch = ChangeBatch(changes, look_up_recorded=True)
            try:
                self.process_event(batch, position)  # type: ignore[arg-type]
            except IntegrityError:
                self.forget_persons(batch.touched())
                raise
        return batch

    def record_gap(self, source: str, first: int, last: int, accepted_by: str) -> InputGap:
        """Records that positions `first`..`last` of `source` will never be recorded, and moves
        the source's position past them, in one transaction."""
        gap = InputGap(source, first, last, accepted_by)
        processing_event = ProcessingEvent[UUID](Tracking(source, last))
        processing_event.collect_events(gap)
        self._record(processing_event)
        return gap

    def save_with_position(self, persons: Iterable[Person], position: Tracking | None) -> None:
        """Stores the persons' new events (outcomes, not changes) and a position, in one
        transaction; IntegrityError when a person changed meanwhile (nothing is written)."""
        processing_event = ProcessingEvent[UUID](position)
        for person in persons:
            processing_event.events.extend(person.collect_events())
            processing_event.aggregates[person.id] = person
        self._record(processing_event)
        self._take_snapshots(processing_event)

    def gaps(self) -> Iterator[InputGap.Accepted]:
        """Every accepted gap, in the order they were recorded."""
        for notification in self._all_notifications(topics=[get_topic(InputGap.Accepted)]):
            event = self.mapper.to_domain_event(notification)
            assert isinstance(event, InputGap.Accepted)
            yield event

    def forget_persons(self, person_ids: Iterable[UUID]) -> None:
        """Drops these persons from the cache and the outlines: after a failed write (the cached
        objects may hold events that were never stored), or when another writer may change them."""
        cache, outlines = self.repository.cache, self._outlines
        if cache is None:
            return
        for person_id in person_ids:
            with contextlib.suppress(KeyError):
                cache.get(person_id, evict=True)
            if outlines is not None:
                outlines.pop(person_id, None)

    def policy(self, domain_event: Any, processing_event: ProcessingEvent[UUID]) -> None:
        batch: ChangeBatch = domain_event
        # Event ids as ints and persons by key in this batch's sets: a UUID hashes in Python.
        known = (
            {
                i.int
                for i in self.index.recorded_changes({c.provenance.event_id for c in batch.changes})
            }
            if batch.look_up_recorded
            else set()
        )
        fresh: list[tuple[int, Change]] = []
        for index, change in enumerate(batch.changes):
            event_id = change.provenance.event_id.int
            if event_id in known:
                batch.duplicates += 1
            else:
                known.add(event_id)
                fresh.append((index, change))
        person_ids = [aggregate_id(change.person_key) for _, change in fresh]  # once: sha1 each
        self._load_persons(batch, [change for _, change in fresh], person_ids)
        addresses: dict[str, str] = {}
        carriers: set[tuple[str, str]] = set()
        failures: dict[int, Exception] = {}
        broken: set[str] = set()
        direct: list[StoredEvent] = []  # made straight from changes (domain.first_change)
        for (index, change), person_id in zip(fresh, person_ids, strict=True):
            key = change.person_key
            if key in broken:
                continue  # tried again in the next attempt, on a person read afresh
            try:
                outline = batch.outlined.get(person_id)
                if key in batch.firsts:
                    direct.extend(self._first_change(change))
                    new_link = True
                    _note(batch, person_id, (0, ()), change)
                elif outline is not None and _outlined_path(outline, change):
                    version, mailboxes = outline
                    new_link = change.mailbox is not None and change.mailbox not in mailboxes
                    direct.append(self._next_change_at(person_id, version, change))
                    _note(batch, person_id, outline, change)
                elif key in batch.loaded_once:
                    person = self._loaded(batch, change.person_key, person_id)
                    new_link = _new_link(person, change)
                    if not _snapshot_due(person.version + 1):
                        direct.append(self._next_change(person, change))
                        _note(batch, person_id, (person.version, tuple(person.mailboxes)), change)
                    else:  # a snapshot is taken of the changed person
                        batch.persons[person_id] = person
                        _apply(person, change)
                else:
                    person = self._person_for(batch, change.person_key, person_id)
                    new_link = _new_link(person, change)
                    _apply(person, change)
            except PersistenceError:
                raise  # the store's trouble, not this change's
            except Exception as error:  # whatever the cause, it is this change that fails
                failures[index] = error
                broken.add(key)
                continue
            batch.recorded += 1
            if new_link and change.mailbox is not None:
                if change.email is not None:
                    addresses[change.mailbox] = change.email
                if change.mailbox != change.person_key:
                    carriers.add((change.mailbox, change.person_key))
        if failures:
            raise ChangesFailed(failures)
        for person_id, person in batch.persons.items():
            # Collected by hand: collect_events() checks a runtime Protocol per item, which is slow.
            processing_event.events.extend(person.collect_events())
            processing_event.aggregates[person_id] = person
        processing_event.saved_kwargs.update(
            change_ids=[change.provenance.event_id for index, change in fresh],
            addresses=addresses,
            carriers=sorted(carriers),
            direct_events=direct,
            outlines=batch.noted,
        )

    def _record(self, processing_event: ProcessingEvent[UUID]) -> list[Any]:
        """Maps and inserts the events (with the changes stored as made), and caches the persons;
        returns no recordings: nothing here reads them."""
        kwargs = dict(processing_event.saved_kwargs)
        stored = [self.mapper.to_stored_event(event) for event in processing_event.events]
        stored.extend(kwargs.pop("direct_events", ()))
        noted: dict[UUID, Outline] = kwargs.pop("outlines", {})
        self.recorder.insert_events(stored, tracking=processing_event.tracking, **kwargs)
        cache = self.repository.cache
        if cache is not None and not self.repository.fastforward:  # as the library's _record
            for person_id, person in processing_event.aggregates.items():
                cache.put(person_id, person)
        outlines = self._outlines
        if outlines is not None:
            for person_id in processing_event.aggregates:
                outlines.pop(person_id, None)  # the cache holds them now
            if len(outlines) + len(noted) > OUTLINES_MAX:
                outlines.clear()
            outlines.update(noted)
        return []

    def _first_change(self, change: Change) -> tuple[StoredEvent]:
        _check(change)
        return self._firsts.events(change, without_addresses(change.provenance))

    def _next_change(self, person: Person, change: Change) -> StoredEvent:
        return self._next_change_at(person.id, person.version, change, person.salesforce_id)

    def _next_change_at(
        self, person_id: UUID, version: int, change: Change, salesforce_id: str | None = None
    ) -> StoredEvent:
        _check(change)
        provenance = without_addresses(change.provenance)
        return self._firsts.next_event(person_id, version, change, provenance, salesforce_id)

    def _take_snapshots(self, processing_event: ProcessingEvent[UUID]) -> None:
        """Snapshots from the aggregates in hand (no re-read), when a batch crosses an interval.
        A snapshot is an optimisation: failing to write one never fails the batch."""
        if self.snapshots is None:
            return
        crossed = {}
        for event in processing_event.events:
            if _snapshot_due(event.originator_version):
                crossed[event.originator_id] = processing_event.aggregates.get(event.originator_id)
        snapshots = [Snapshot.take(person) for person in crossed.values() if person is not None]
        if snapshots:
            try:
                self.snapshots.put(snapshots)
            except Exception as error:
                log.warning("could not store %d snapshots: %s", len(snapshots), error)

    # Reading.

    def person(self, key: str) -> Person | None:
        try:
            person: Person = self.repository.get(aggregate_id(key))
        except AggregateNotFoundError:
            return None
        return person

    def standing(self, key: str) -> tuple[Person | None, Standing]:
        """A person's or an address's one answer (see `domain.person`)."""
        if is_address(key):
            return self._address_standing(key)
        person = self.person(key)
        if person is None:
            return None, Standing(opted_out=False, own=OptOut())
        states = {mailbox: self._address_standing(mailbox)[1].own for mailbox in person.mailboxes}
        return person, standing(person, states)

    def _address_standing(self, key: str) -> tuple[Person | None, Standing]:
        address = self.person(key)
        carriers = [p for p in map(self.person, self.index.carriers(key)) if p is not None]
        state = address_state(address, key, carriers)
        linked = address.salesforce_id if address is not None else None
        linked = linked or next((c.salesforce_id for c in carriers if c.salesforce_id), None)
        return address, Standing(opted_out=state.opted_out, own=state, salesforce_id=linked)

    def carriers(self, mailbox: str) -> list[str]:
        return self.index.carriers(mailbox)

    def address(self, mailbox: str) -> str | None:
        return self.index.address(mailbox)

    def forget(self, key: str) -> list[str]:
        """Erases the clear address(es) of a person or an address; the opt-out, the keyed hash
        and the audit stay. Returns the mailbox keys whose address was erased."""
        if is_address(key):
            mailboxes = [key]
        else:
            person = self.person(key)
            mailboxes = list(person.mailboxes) if person is not None else []
        return [mailbox for mailbox in mailboxes if self.index.erase_address(mailbox)]

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

    def positions(self, sources: Collection[str]) -> dict[str, int]:
        """The last recorded position of each source, -1 where none is recorded yet."""
        recorded = {source: self.position(source) for source in sources}
        return {source: -1 if at is None else at for source, at in recorded.items()}

    def position(self, source: str) -> int | None:
        """The last recorded position (e.g. Kafka offset) of a source like `topic:partition`."""
        return self.recorder.max_tracking_id(source)

    def _load_persons(
        self, batch: ChangeBatch, changes: Sequence[Change], person_ids: Sequence[UUID]
    ) -> None:
        """Loads every person the batch touches in one read (cached ones from the cache). A new
        person with one change in the batch is left to `_first_change` (`person_ids`: each
        change's person)."""
        pairs = zip(person_ids, changes, strict=True)
        keys = {person_id: change.person_key for person_id, change in pairs}
        cache = self.repository.cache
        if cache is not None:
            held = cache.cache  # the cache's own dict: most persons miss, and get() raises then
            for person_id in [person_id for person_id in keys if person_id in held]:
                try:
                    cached = cache.get(person_id)
                except KeyError:
                    continue
                assert isinstance(cached, Person)
                batch.persons[person_id] = cached
                del keys[person_id]
        once = _touched_once([change.person_key for change in changes]) if self._direct else set()
        outlines = self._outlines
        if outlines:
            for person_id in [person_id for person_id in keys if person_id in outlines]:
                if keys[person_id] in once:
                    batch.outlined[person_id] = outlines[person_id]
                    del keys[person_id]  # not read: its next change is stored as made
        stored = self.index.histories(list(keys)) if keys else {}
        for person_id, key in keys.items():
            history = stored.get(person_id)
            if history is not None:
                batch.unprojected[person_id] = history
                if key in once:
                    batch.loaded_once.add(key)
            elif key in once:
                batch.firsts.add(key)
            else:
                batch.persons[person_id] = Person.register(key)

    def _person_for(self, batch: ChangeBatch, key: str, person_id: UUID) -> Person:
        if person_id not in batch.persons:
            batch.persons[person_id] = self._loaded(batch, key, person_id)
        return batch.persons[person_id]

    def _loaded(self, batch: ChangeBatch, key: str, person_id: UUID) -> Person:
        stored = batch.unprojected.pop(person_id, None)
        if stored is None:
            return self.person(key) or Person.register(key)
        # Projected here, so that a history this version cannot read fails its change only.
        person = _projected(map(self.mapper.to_domain_event, stored))
        if not isinstance(person, Person):
            raise TypeError(f"the stored history of {key} is not a person's")
        return person


def refusal_of(change: Change) -> str | None:
    """Why the domain would refuse this change, checked before anything is recorded."""
    provenance = change.provenance
    if change.kind is ChangeKind.UNSUBSCRIBE_REMOVED and not (
        provenance.actor_kind == "user" and provenance.actor_id and provenance.reason
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


def _snapshot_due(version: int) -> bool:
    """Whether a person's event at this version is followed by a snapshot of them."""
    return version % SNAPSHOT_EVERY == 0


def _outlined_path(outline: Outline, change: Change) -> bool:
    """Whether a change to a person in outline is stored as made: an unsubscribe or a removal
    (a link names the person's current Salesforce id, not in the outline) that is not due a
    snapshot."""
    return change.kind is not ChangeKind.PERSON_LINKED and not _snapshot_due(outline[0] + 1)


def _note(batch: ChangeBatch, person_id: UUID, before: Outline, change: Change) -> None:
    """The outline of a person after a change stored as made (`before`: their version and
    addresses, `(0, ())` for a new person), kept once the batch is stored; none for an address,
    whose answer needs more than an outline."""
    if is_address(change.person_key):
        return
    version, mailboxes = before
    mailbox = change.mailbox
    if mailbox and mailbox != change.person_key and mailbox not in mailboxes:  # `Person.carry`
        mailboxes = (*mailboxes, mailbox)
    batch.noted[person_id] = (version + 1, mailboxes)


def _check(change: Change) -> None:
    """What applying the change to a person would refuse, for a change stored without it."""
    refusal = refusal_of(change)
    if refusal is not None:
        raise ValueError(refusal)


def without_addresses(provenance: Provenance) -> Provenance:
    """Free text is stored for good: anything shaped like an address is replaced, and so is a
    recipient's own id or name when it is one."""
    reason = provenance.reason and _ADDRESS_LIKE.sub("<address>", provenance.reason)
    actor_id, actor_name = provenance.actor_id, provenance.actor_name
    if provenance.actor_kind == "recipient":
        actor_id = actor_id and _ADDRESS_LIKE.sub("<address>", actor_id)
        actor_name = actor_name and _ADDRESS_LIKE.sub("<address>", actor_name)
    if (reason, actor_id, actor_name) == (
        provenance.reason,
        provenance.actor_id,
        provenance.actor_name,
    ):
        return provenance
    return Provenance(
        provenance.event_id,
        provenance.source,
        provenance.actor_kind,
        actor_id,
        actor_name,
        provenance.channel,
        provenance.occurred_at,
        reason,
    )


def _new_link(person: Person, change: Change) -> bool:
    """Whether the change links the person to an address the index does not have for it yet
    (for an address itself: its first change)."""
    if change.mailbox is None:
        return False
    if change.mailbox == change.person_key:
        return person.own == OptOut() and person.salesforce_id is None
    return change.mailbox not in person.mailboxes


def _projected(events: Iterable[Any]) -> Any:
    """eventsourcing's project_aggregate without its runtime-Protocol assert per event (which
    cost more than the rest of loading a person)."""
    aggregate = None
    for event in events:
        aggregate = event.mutate(aggregate)
    return aggregate


def _touched_once(keys: Sequence[str]) -> set[str]:
    """The persons that appear exactly once among these (each change's person key)."""
    seen: set[str] = set()
    again: set[str] = set()
    for key in keys:
        (again if key in seen else seen).add(key)
    return seen - again


def _apply(person: Person, change: Change) -> None:
    provenance = without_addresses(change.provenance)
    if change.kind is ChangeKind.UNSUBSCRIBED:
        person.unsubscribe(provenance, mailbox=change.mailbox, salesforce_id=change.salesforce_id)
    elif change.kind is ChangeKind.UNSUBSCRIBE_REMOVED:
        person.remove_unsubscribe(provenance, mailbox=change.mailbox)
    elif change.salesforce_id is None:
        raise ValueError("linking a person needs a Salesforce id")
    else:
        person.link(provenance, change.salesforce_id, mailbox=change.mailbox)
