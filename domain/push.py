"""The live push in the domain's words: what a person is owed by Salesforce, and recording what
Salesforce did (outcome events, which never change the opt-out answer) with the pusher's position.

A push only ever writes true: a person is owed a push while their one answer is "opted out" and
their own record has neither accepted the opt-out nor refused it for good. A removed unsubscribe
is never pushed (the answer is then "subscribed"). An address opted out by its recipient is
pushed through the records of the persons that carry it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from eventsourcing.persistence import IntegrityError, Tracking

from domain.application import ChangeRecorder
from domain.identity import RecordType, record_type, to_18
from domain.person import Person, WaitingReason

__all__ = [
    "Accepted",
    "Owed",
    "Refused",
    "Waiting",
    "WaitingReason",
    "owed_by",
    "owed_push",
    "record_outcomes",
]

RECORD_ATTEMPTS = 5  # an ingest writing the same person meanwhile makes one attempt fail


@dataclass(frozen=True)
class Owed:
    """A push a person is owed: the record to write, or why it has to wait."""

    key: str
    record_id: str | None = None  # 18 characters
    waiting: WaitingReason | None = None

    @property
    def object_type(self) -> RecordType:
        assert self.record_id is not None
        return record_type(self.record_id)


@dataclass(frozen=True)
class Accepted:
    key: str
    record_id: str
    object_type: str
    field: str
    written_id: str
    converted_contact_id: str | None
    accepted_at: datetime


@dataclass(frozen=True)
class Refused:
    key: str
    record_id: str
    object_type: str
    code: str
    message: str
    will_retry: bool


@dataclass(frozen=True)
class Waiting:
    key: str
    reason: WaitingReason
    detail: str | None = None


Outcome = Accepted | Refused | Waiting


def owed_push(store: ChangeRecorder, key: str) -> Owed | None:
    """What the live push owes this person or address now; None when nothing."""
    person, answer = store.standing(key)
    if person is None:
        return None
    return owed_by(person, answer.opted_out, lambda: bool(store.carriers(key)))


def owed_by(person: Person, opted_out: bool, carried: Callable[[], bool]) -> Owed | None:
    """The rule of `owed_push` for a person already read (`carried`: whether any person carries
    this address); the nightly pass applies it to every person at once."""
    key = person.key
    if not opted_out:
        return None
    if person.salesforce_id is None:
        if person.is_address and carried():
            return None  # pushed through the records of the persons that carry it
        return Owed(key, waiting=WaitingReason.NO_SALESFORCE_ID)
    record = to_18(person.salesforce_id)
    if record in (person.accepted_record, person.refused_record):
        return None
    return Owed(key, record_id=record)


def _apply(person: Person, outcome: Outcome) -> None:
    if isinstance(outcome, Accepted):
        person.push_accepted(
            record_id=outcome.record_id,
            object_type=outcome.object_type,
            field=outcome.field,
            written_id=outcome.written_id,
            converted_contact_id=outcome.converted_contact_id,
            accepted_at=outcome.accepted_at,
        )
    elif isinstance(outcome, Refused):
        person.push_refused(
            record_id=outcome.record_id,
            object_type=outcome.object_type,
            code=outcome.code,
            message=outcome.message,
            will_retry=outcome.will_retry,
        )
    else:
        person.push_waiting(outcome.reason, outcome.detail)


def record_outcomes(
    store: ChangeRecorder, outcomes: Sequence[Outcome], position: Tracking | None
) -> None:
    """Stores the outcomes in the persons' histories and the pusher's position, in one
    transaction; persons changed meanwhile by an ingest are read afresh and tried again."""
    for attempt in range(RECORD_ATTEMPTS):
        persons: dict[str, Person] = {}
        for outcome in outcomes:
            person = persons.get(outcome.key) or store.person(outcome.key)
            if person is None:
                continue
            persons[outcome.key] = person
            _apply(person, outcome)
        try:
            store.save_with_position(persons.values(), position)
            return
        except IntegrityError:
            store.forget_persons(person.id for person in persons.values())
            if attempt == RECORD_ATTEMPTS - 1:
                raise
