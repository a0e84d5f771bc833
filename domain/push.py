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

from eventsourcing.application import AggregateNotFoundError
from eventsourcing.persistence import IntegrityError, Tracking

from domain.api_spend import DAY_S, ApiSpend, day_of, days_back, spend_id
from domain.application import ChangeRecorder
from domain.identity import RecordType, record_type, to_18
from domain.opt_out_field import EmailScope
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
    "spent_calls",
]

RECORD_ATTEMPTS = 5  # an ingest writing the same person meanwhile makes one attempt fail


@dataclass(frozen=True)
class Owed:
    """A push a person is owed: the record to write, the emails whose records to find and write,
    or why it has to wait."""

    key: str
    record_id: str | None = None  # 18 characters
    waiting: WaitingReason | None = None
    # Clear addresses to look records up by (scope `all`, or a pending link resolved by email):
    # held in memory for the push only, never put into an event.
    emails: tuple[str, ...] = ()
    settled: frozenset[str] = frozenset()  # records already accepted or refused for good

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


def owed_push(
    store: ChangeRecorder,
    key: str,
    *,
    email_scope: EmailScope = EmailScope.LINKED,
    resolve_by_email: bool = False,
    loaded: dict[str, Person] | None = None,
) -> Owed | None:
    """What the live push owes this person or address now; None when nothing.

    With scope `all` the records carrying the person's emails are owed too; with
    `resolve_by_email` (or scope `all`) a pending link is pushed to the records carrying them.
    `loaded` collects the persons read, for `record_outcomes` to write without reading again.
    """
    person, answer = store.standing(key)
    if loaded is not None and person is not None:
        loaded[key] = person
    if person is None:
        return None
    return owed_by(
        person,
        answer.opted_out,
        lambda: bool(store.carriers(key)),
        emails=lambda: _emails(store, person),
        email_scope=email_scope,
        resolve_by_email=resolve_by_email,
    )


def owed_by(
    person: Person,
    opted_out: bool,
    carried: Callable[[], bool],
    *,
    emails: Callable[[], tuple[str, ...]] = tuple,
    email_scope: EmailScope = EmailScope.LINKED,
    resolve_by_email: bool = False,
) -> Owed | None:
    """The rule of `owed_push` for a person already read (`carried`: whether any person carries
    this address; `emails`: the person's clear addresses still on record); the nightly pass
    applies it to every person at once."""
    key = person.key
    if not opted_out:
        return None
    pending = person.salesforce_id is None
    if pending and person.is_address and carried():
        return None  # pushed through the records of the persons that carry it
    by_email = email_scope is EmailScope.ALL or (resolve_by_email and pending)
    found = emails() if by_email else ()
    settled = frozenset((*person.accepted_records, *person.refused_records))
    if pending:
        return Owed(key, waiting=WaitingReason.NO_SALESFORCE_ID, emails=found, settled=settled)
    record = to_18(str(person.salesforce_id))
    if record in settled or record in (person.accepted_record, person.refused_record):
        return Owed(key, emails=found, settled=settled) if found else None
    return Owed(key, record_id=record, emails=found, settled=settled)


def _emails(store: ChangeRecorder, person: Person) -> tuple[str, ...]:
    """The clear addresses of a person (or an address) still on record (not erased)."""
    keys = [person.key] if person.is_address else person.mailboxes
    return tuple(email for email in map(store.address, keys) if email)


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
    store: ChangeRecorder,
    outcomes: Sequence[Outcome],
    position: Tracking | None,
    calls: Sequence[float] = (),
    loaded: dict[str, Person] | None = None,
) -> None:
    """Stores the outcomes in the persons' histories, the API calls made (`calls`: when each was
    sent) and the pusher's position, in one transaction; persons changed meanwhile by an ingest
    are read afresh and tried again. `loaded`: persons just read (by `owed_push`), used once."""
    for attempt in range(RECORD_ATTEMPTS):
        persons: dict[str, Person] = {}
        read = (loaded or {}) if attempt == 0 else {}
        for outcome in outcomes:
            person = persons.get(outcome.key) or read.get(outcome.key) or store.person(outcome.key)
            if person is None:
                continue
            persons[outcome.key] = person
            _apply(person, outcome)
        spends = _spends(store, calls)
        try:
            store.save_with_position([*persons.values(), *spends], position)  # type: ignore[list-item]
            return
        except IntegrityError:
            store.forget_persons(p.id for p in [*persons.values(), *spends])
            if attempt == RECORD_ATTEMPTS - 1:
                raise


def _spend(store: ChangeRecorder, day: str) -> ApiSpend | None:
    try:
        spend: ApiSpend = store.repository.get(spend_id(day))
    except AggregateNotFoundError:
        return None
    return spend


def _spends(store: ChangeRecorder, calls: Sequence[float]) -> list[ApiSpend]:
    by_day: dict[str, list[float]] = {}
    for at in calls:
        by_day.setdefault(day_of(at), []).append(at)
    spends = []
    for day, times in by_day.items():
        spend = _spend(store, day) or ApiSpend(day)
        spend.made(times)
        spends.append(spend)
    return spends


def spent_calls(store: ChangeRecorder, now: float) -> list[float]:
    """When each API call the pusher recorded in the 24 hours before `now` was sent: the daily
    budget's count, carried across a restart."""
    times: list[float] = []
    for day in days_back(now):
        spend = _spend(store, day)
        if spend is not None:
            times.extend(at for at in spend.times if at > now - DAY_S)
    return sorted(times)
