"""Point-in-time replay for compliance: the opt-out answers at a past instant, folded from the log.

"As the system knew it then" (the default, `By.RECORDED`) counts the events *recorded* by the
instant: an event's `timestamp` is stamped by the domain when it accepts the change, inside the
transaction that stores it, so the answer is what a reader could have seen then (to within that
transaction's few milliseconds). `By.OCCURRED` counts the changes that *occurred* by the instant,
as known now: a late-arriving older change is included. Both fold with the domain's own rule
(`domain.person`), never with a copy of it; snapshots are not used, only the events.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from uuid import UUID

import msgspec

from domain.application import ChangeRecorder
from domain.identity import is_address
from domain.person import (
    Person,
    Standing,
    address_state,
    standing,
    stored_topics,
)
from domain.rule import Mark, OptOut

PAGE = 1000
_PERSON_EVENTS: tuple[type, ...] = (
    Person.Registered,
    Person.Unsubscribed,
    Person.UnsubscribeRemoved,
    Person.PersonLinked,
    Person.OptOutAccepted,
    Person.OptOutRefused,
    Person.PushWaiting,
)
# Read by topic: other aggregates' events (accepted gaps) and unknown newer types are left alone.
PERSON_TOPICS = stored_topics(_PERSON_EVENTS)


class By(StrEnum):
    RECORDED = "recorded"  # events recorded by the instant: as the system knew it then
    OCCURRED = "occurred"  # changes that occurred by the instant, as known now


def counts(event: Person.Event, as_of: datetime, by: By) -> bool:
    """Whether an event is part of the state at `as_of`."""
    if by is By.OCCURRED and isinstance(event, Person.Changed):
        return event.occurred_at <= as_of
    return event.timestamp <= as_of


@dataclass
class Folded:
    """One person's or address's aggregate, from the events that count at the instant."""

    person: Person
    changes: int = 0  # changes that count; none: not known at the instant


def fold(events: Iterable[Person.Event], as_of: datetime, by: By) -> Folded | None:
    """The aggregate as of the instant (events applied in version order, those that do not
    count skipped)."""
    folded: Folded | None = None
    for event in events:
        if isinstance(event, Person.Registered):
            created = event.registration().mutate(None)
            assert isinstance(created, Person)
            folded = Folded(created)
            if not isinstance(event, Person.Changed):
                continue  # else a new person's first change: registered, then the change
        if folded is not None and counts(event, as_of, by):
            event.apply(folded.person)
            folded.changes += isinstance(event, Person.Changed)
    return folded


@dataclass
class Moment:
    """The persons and addresses known at an instant, and their one answers."""

    persons: dict[str, Person]
    carriers: dict[str, list[Person]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # In key order, as the store's index lists them (an address's Salesforce id is its
        # first carrier's that has one).
        for key in sorted(self.persons):
            for mailbox in self.persons[key].mailboxes:
                self.carriers.setdefault(mailbox, []).append(self.persons[key])

    @classmethod
    def of(cls, folded: Iterable[Folded]) -> Moment:
        return cls({f.person.key: f.person for f in folded if f.changes})

    def known(self, key: str) -> bool:
        return key in self.persons or key in self.carriers

    def addresses(self) -> set[str]:
        return {key for key in self.persons if is_address(key)} | set(self.carriers)

    def standing(self, key: str) -> Standing:
        """The one answer, as `ChangeRecorder.standing` gives it for the live state."""
        if is_address(key):
            address, carriers = self.persons.get(key), self.carriers.get(key, [])
            state = address_state(address, key, carriers)
            linked = address.salesforce_id if address is not None else None
            linked = linked or next((c.salesforce_id for c in carriers if c.salesforce_id), None)
            return Standing(opted_out=state.opted_out, own=state, salesforce_id=linked)
        person = self.persons.get(key)
        if person is None:
            return Standing(opted_out=False, own=OptOut())
        return standing(person, {m: self._address_state(m) for m in person.mailboxes})

    def _address_state(self, mailbox: str) -> OptOut:
        return address_state(self.persons.get(mailbox), mailbox, self.carriers.get(mailbox, []))


def around(log: ChangeRecorder, key: str, as_of: datetime, by: By = By.RECORDED) -> Moment:
    """Everything one person's or address's answer at the instant depends on: its own events,
    the addresses it carries and their carriers (for an address: its carriers and theirs)."""
    folded: dict[str, Folded] = {}

    def load(k: str) -> Folded | None:
        if k not in folded:
            found = fold(log.history(k), as_of, by)
            if found is not None:
                folded[k] = found
        return folded.get(k)

    load(key)
    persons = log.carriers(key) if is_address(key) else [key]
    for person_key in persons:
        person = load(person_key)
        for mailbox in person.person.mailboxes if person is not None else ():
            load(mailbox)
            for carrier in log.carriers(mailbox):
                load(carrier)
    return Moment.of(folded.values())


def whole_log(log: ChangeRecorder, as_of: datetime, by: By = By.RECORDED) -> tuple[Moment, int]:
    """Every person and address at the instant, from one pass over the log in store order;
    with the number of changes that counted."""
    folded: dict[UUID, Folded] = {}
    considered = 0
    for event in _person_events(log):
        if isinstance(event, Person.Registered):
            created = event.registration().mutate(None)
            assert isinstance(created, Person)
            folded[event.originator_id] = Folded(created)
            if not isinstance(event, Person.Changed):
                continue  # else a new person's first change: registered, then the change
        found = folded.get(event.originator_id)
        if found is not None and counts(event, as_of, by):
            event.apply(found.person)
            if isinstance(event, Person.Changed):
                found.changes += 1
                considered += 1
    return Moment.of(folded.values()), considered


def _person_events(log: ChangeRecorder) -> Iterator[Person.Event]:
    start: int | None = None
    while True:
        notifications = log.recorder.select_notifications(
            start, PAGE, topics=PERSON_TOPICS, inclusive_of_start=start is None
        )
        for notification in notifications:
            event = log.mapper.to_domain_event(notification)
            assert isinstance(event, Person.Event)
            yield event
        if len(notifications) < PAGE:
            return
        start = notifications[-1].id


# What the command line prints (and a program reads with --json).


class MarkAt(msgspec.Struct, frozen=True, kw_only=True):
    occurred_at: datetime
    source: str
    event_id: str


class AnswerAt(msgspec.Struct, frozen=True, kw_only=True):
    key: str
    kind: str  # person | address
    known: bool  # any change of it counted at the instant
    opted_out: bool
    own_opted_out: bool
    latest_unsubscribe: MarkAt | None
    latest_removal: MarkAt | None
    opted_out_by_addresses: list[str]
    salesforce_id: str | None
    pending_link: bool


class Count(msgspec.Struct, frozen=True, kw_only=True):
    opted_out: int
    subscribed: int


class LogAt(msgspec.Struct, frozen=True, kw_only=True):
    as_of: datetime
    by: str
    changes: int  # changes that counted
    persons: Count
    addresses: Count


class KeyAt(msgspec.Struct, frozen=True, kw_only=True):
    as_of: datetime
    by: str
    answer: AnswerAt
    carried_by: list[AnswerAt]  # for an address: each person carrying it at the instant


def answer_at(moment: Moment, key: str) -> AnswerAt:
    answer = moment.standing(key)
    person = moment.persons.get(key)
    return AnswerAt(
        key=key,
        kind="address" if is_address(key) else "person",
        known=moment.known(key),
        opted_out=answer.opted_out,
        own_opted_out=person.own.opted_out if person is not None else False,
        latest_unsubscribe=_mark(answer.own.unsubscribe),
        latest_removal=_mark(answer.own.removal),
        opted_out_by_addresses=sorted(answer.by_address),
        salesforce_id=answer.salesforce_id,
        pending_link=answer.pending_link,
    )


def key_at(log: ChangeRecorder, key: str, as_of: datetime, by: By = By.RECORDED) -> KeyAt:
    moment = around(log, key, as_of, by)
    carriers = sorted(p.key for p in moment.carriers.get(key, [])) if is_address(key) else []
    return KeyAt(
        as_of=as_of,
        by=str(by),
        answer=answer_at(moment, key),
        carried_by=[answer_at(moment, carrier) for carrier in carriers],
    )


def log_at(log: ChangeRecorder, as_of: datetime, by: By = By.RECORDED) -> LogAt:
    moment, changes = whole_log(log, as_of, by)
    persons = [moment.standing(k).opted_out for k in moment.persons if not is_address(k)]
    addresses = [moment.standing(k).opted_out for k in moment.addresses()]
    return LogAt(
        as_of=as_of,
        by=str(by),
        changes=changes,
        persons=Count(opted_out=sum(persons), subscribed=len(persons) - sum(persons)),
        addresses=Count(opted_out=sum(addresses), subscribed=len(addresses) - sum(addresses)),
    )


def _mark(mark: Mark | None) -> MarkAt | None:
    if mark is None:
        return None
    return MarkAt(occurred_at=mark.occurred_at, source=mark.source, event_id=str(mark.event_id))
