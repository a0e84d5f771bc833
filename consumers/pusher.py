"""The live pusher: follows the event log from its own tracked position and sets the opt-out
checkbox in Salesforce, up to 200 records a call, recording what Salesforce did in each person's
history together with its new position.

Salesforce is called outside any database transaction; the outcomes and the position are then
stored in one. The stored position never passes a notification whose person is still owed a
push (a retry, a budget wait), so a crash at any instant repeats at most the batch in flight and
the retries owed — and writing true twice is harmless. The log is the queue: a refusal to be
retried or a budget wait, read back after a restart, schedules the person again.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from uuid import UUID

from eventsourcing.persistence import Tracking

from adapters.log_follower import LogFollower
from adapters.salesforce import (
    ApiLimitReached,
    BudgetSpent,
    OptOutTarget,
    OptOutWrite,
    PushOutcome,
    PushResult,
    RetryLater,
    SalesforceFailure,
    SalesforceOrg,
)
from domain.application import ChangeRecorder
from domain.identity import record_type
from domain.opt_out_field import EmailScope
from domain.person import Person, WaitingReason, stored_topics
from domain.push import Accepted, Outcome, Owed, Refused, Waiting, owed_push, record_outcomes

log = logging.getLogger(__name__)

PUSHER = "pusher"  # the pusher's position in the store's tracking table
BATCH = 200  # records per sObject Collections call
POLL_S = 0.2  # the linger after news: what arrives meanwhile goes into the same call
IDLE_WAIT_S = 30.0  # the longest idle wait for news (LISTEN on PostgreSQL): the lock is checked
PAGE = 1000  # notifications read at a time
READ_AHEAD = 2000  # persons ready to push before reading further: memory stays bounded
KEYS_KEPT = 100_000  # aggregate ids whose person key is remembered
BACKOFF_S = (1.0, 2.0, 5.0, 15.0, 30.0, 60.0)  # per person, by attempt; with jitter
LIMIT_PROBE_S = 900.0  # REQUEST_LIMIT_EXCEEDED: look again a few times an hour, no more

_CHANGES = (Person.Unsubscribed, Person.UnsubscribeRemoved, Person.PersonLinked)
_RETRIES = (Person.OptOutRefused, Person.PushWaiting)
# Registrations name a new person's key: read here, it need not be loaded to be known.
_FOLLOWED = stored_topics((Person.Registered, *_CHANGES, *_RETRIES))
# Waits read back from the log (after a restart): the person is owed a push again.
_READ_BACK = {WaitingReason.BUDGET_SPENT, WaitingReason.API_LIMIT, WaitingReason.FIELD_MISSING}


class LockLost(RuntimeError):
    """Another pusher may be active now: this one stops before pushing anything more."""


@dataclass
class PushStats:
    read: int = 0  # notifications read
    written: int = 0  # records sent to Salesforce
    accepted: int = 0
    refused: int = 0
    retried: int = 0
    waiting: int = 0
    calls: int = 0  # Salesforce API calls made
    position: int = 0


@dataclass
class _Due:
    since: int  # the notification that made it due: the stored position stays before it
    at: float  # monotonic time it is due
    attempts: int = 0


@dataclass
class Pusher:
    """Pushes opt-outs from one store to one org. Not shared between threads."""

    store: ChangeRecorder
    org: SalesforceOrg
    target: OptOutTarget | None  # None: the field is missing from the org (`field_missing` says)
    batch: int = BATCH
    poll_s: float = POLL_S
    clock: Callable[[], float] = time.monotonic
    stopping: threading.Event = field(default_factory=threading.Event)
    stats: PushStats = field(default_factory=PushStats)
    # Whether this is still the one active pusher of its store (see adapters.process_lock).
    holds_lock: Callable[[], bool] = lambda: True
    field_missing: str | None = None  # why no field can be written: every push waits, said once
    email_scope: EmailScope = EmailScope.LINKED  # OPTOUT_EMAIL_SCOPE
    resolve_by_email: bool = False  # OPTOUT_RESOLVE_BY_EMAIL: pending links found by email

    def __post_init__(self) -> None:
        self.position = self.store.position(PUSHER) or 0
        self.read_to = self.position
        self.due: dict[str, _Due] = {}
        self.paused_until = 0.0
        self.stats.position = self.position
        self._keys: dict[UUID, str] = {}  # a person's key never changes
        self._calls_recorded = 0  # of org.calls_made: the rest are stored with the next outcomes
        self.follower = LogFollower(self.store.recorder)
        self.lag = 0  # notifications of the log not yet read, as of the last read
        self.lock_held = True  # as last checked
        self.store_answered = True  # whether the last read of the log succeeded
        self.paused_why: str | None = None

    def run(self, *, idle_exit_s: float | None = None) -> PushStats:
        """Pushes until stopped, or until nothing was read or pushed for `idle_exit_s`."""
        self.follower.stopping = self.stopping  # one event stops the run and cuts its waits short
        last_activity = self.clock()
        while not self.stopping.is_set():
            self.lock_held = self.holds_lock()
            if not self.lock_held:
                raise LockLost("the pusher's lock on the store was lost: stopping")
            if self.step():
                last_activity = self.clock()
                continue
            idle_s = self.clock() - last_activity
            if idle_exit_s is not None and idle_s >= idle_exit_s:
                break
            wait_s = IDLE_WAIT_S if idle_exit_s is None else idle_exit_s - idle_s
            if self.follower.wait(self.read_to, min(wait_s, self._next_due()), _FOLLOWED):
                self.stopping.wait(self.poll_s)  # the linger
        return self.stats

    def not_ready(self) -> list[str]:
        """Why this pusher is not pushing now (empty: it is), for /readyz."""
        reasons = ["stopping"] if self.stopping.is_set() else []
        if not self.lock_held:
            reasons.append("the pusher's lock on the store was lost")
        if not self.store_answered:
            reasons.append("the event store did not answer the last read")
        if self.field_missing is not None:
            reasons.append(f"the opt-out field is missing: {self.field_missing}")
        left_s = self.paused_until - self.clock()
        if left_s > 0:
            reasons.append(f"paused by the API limit for {left_s:.0f} s more ({self.paused_why})")
        return reasons

    def close(self) -> None:
        self.follower.close()
        self.store.close()

    def _next_due(self) -> float:
        """Seconds until the first owed push is due (a retry, the end of a pause)."""
        if not self.due:
            return IDLE_WAIT_S
        first = min(due.at for due in self.due.values())
        return max(0.0, max(first, self.paused_until) - self.clock())

    def step(self) -> bool:
        """One pass: read what is new, push what is due; True if anything happened."""
        now = self.clock()
        ready = sum(1 for due in self.due.values() if due.at <= now)
        read = ready < READ_AHEAD and self._read()
        pushed = self._push_due()
        unrecorded = self.org.calls_made > self._calls_recorded  # e.g. the start-up's describes
        if not pushed and (self._settled() > self.position or unrecorded):
            self._save([])
        self.stats.calls = self.org.calls_made
        return read or pushed

    # --- following the log ------------------------------------------------------------------
    def _read(self) -> bool:
        try:
            notifications = self.follower.page(self.read_to, PAGE, _FOLLOWED)
            full = len(notifications) == PAGE  # else all is read: no lag, as of this read
            self.lag = max(0, self.follower.head() - notifications[-1].id) if full else 0
        except Exception:
            self.store_answered = False
            raise
        self.store_answered = True
        now = self.clock()
        for notification in notifications:
            event = self.store.mapper.to_domain_event(notification)
            if isinstance(event, Person.Registered):
                self._remember(event.originator_id, event.key)
                if not isinstance(event, Person.Changed):
                    continue  # else a new person's first change: the change, below
            for key in self._affected(event):
                self._schedule(key, notification.id, now)
        if notifications:
            self.read_to = notifications[-1].id
            self.stats.read += len(notifications)
        return bool(notifications)

    def _affected(self, event: object) -> set[str]:
        """The persons and addresses whose push a stored event may change."""
        if isinstance(event, Person.OptOutRefused) and not event.will_retry:
            return set()
        if isinstance(event, Person.PushWaiting) and event.reason not in _READ_BACK:
            return set()
        assert isinstance(event, Person.Event)
        keys = {self._key_of(event.originator_id)}
        mailbox = getattr(event, "mailbox", None)
        if isinstance(event, Person.Changed) and mailbox:
            keys.add(mailbox)  # one mailbox, one answer: its carriers' answers may change
            keys.update(self.store.carriers(mailbox))
        return keys

    def _key_of(self, person_id: UUID) -> str:
        key = self._keys.get(person_id)
        if key is None:
            person: Person = self.store.repository.get(person_id)
            key = self._remember(person_id, person.key)
        return key

    def _remember(self, person_id: UUID, key: str) -> str:
        if len(self._keys) >= KEYS_KEPT:
            self._keys.clear()
        self._keys[person_id] = key
        return key

    def _schedule(self, key: str, since: int, at: float, attempts: int = 0) -> None:
        due = self.due.get(key)
        if due is None:
            self.due[key] = _Due(since, at, attempts)
        else:  # a back-off or a pause already set stays
            due.since, due.at = min(due.since, since), max(due.at, at)
            due.attempts = max(due.attempts, attempts)

    def _settled(self) -> int:
        """The position to store: every notification up to it is done with."""
        if not self.due:
            return self.read_to
        return min(self.read_to, min(due.since for due in self.due.values()) - 1)

    # --- pushing ------------------------------------------------------------------------------
    def _push_due(self) -> bool:
        now = self.clock()
        if now < self.paused_until:
            return False
        ready = sorted((d.since, k) for k, d in self.due.items() if d.at <= now)[: self.batch]
        if not ready:
            return False
        outcomes: list[Outcome] = []
        owed: list[Owed] = []
        loaded: dict[str, Person] = {}  # read once: their outcomes are written on these
        for _, key in ready:
            wanted = owed_push(
                self.store,
                key,
                email_scope=self.email_scope,
                resolve_by_email=self.resolve_by_email,
                loaded=loaded,
            )
            if wanted is not None and (wanted.record_id is not None or wanted.emails):
                owed.append(wanted)
                continue
            del self.due[key]
            if wanted is not None and wanted.waiting is not None:
                self.stats.waiting += 1
                outcomes.append(Waiting(key, wanted.waiting))
        if owed and self.target is None:
            outcomes.extend(self._field_missing(owed))
        elif owed:
            outcomes.extend(self._push(owed))
        self._save(outcomes, loaded)
        return True

    def _field_missing(self, owed: Sequence[Owed]) -> list[Outcome]:
        """Nothing is written, to this field or another; the persons stay owed (a restart with
        the field in place pushes them)."""
        for person in owed:
            self.due[person.key].at = float("inf")
        self.stats.waiting += len(owed)
        reason = WaitingReason.FIELD_MISSING
        return [Waiting(person.key, reason, self.field_missing) for person in owed]

    def _records_by_email(self, owed: Sequence[Owed]) -> dict[str, list[str]]:
        """The records carrying each email of the batch: one batched look-up (two calls)."""
        emails = [email for person in owed for email in person.emails]
        if not emails:
            return {}
        found = self.org.records_by_email(emails)
        return {email: [record.id for record in records] for email, records in found.items()}

    def _push(self, owed: Sequence[Owed]) -> list[Outcome]:
        """Calls Salesforce (no transaction open) and turns its answers into outcomes."""
        assert self.target is not None
        target = self.target
        try:
            by_email = self._records_by_email(owed)
        except (RetryLater, BudgetSpent, ApiLimitReached) as failed:
            log.warning("Salesforce look-up by email failed: %s", failed)
            return [o for person in owed for o in self._settle(person, [], failed)]
        plan: dict[str, list[str]] = {}  # person key → the records to write for them
        found: set[str] = set()  # persons with a record, whether written already or not
        for person in owed:
            records = [person.record_id] if person.record_id else []
            records += [r for email in person.emails for r in by_email.get(email, [])]
            plan[person.key] = [r for r in dict.fromkeys(records) if r not in person.settled]
            if records:
                found.add(person.key)
        wanted = list(dict.fromkeys(r for records in plan.values() for r in records))
        writes = [
            OptOutWrite(record_id=r, object_type=record_type(r), target=target) for r in wanted
        ]
        self.stats.written += len(writes)
        failure: SalesforceFailure | None = None
        results: Sequence[PushResult] = ()
        if writes:
            try:
                results = self.org.push_opt_outs(writes)
            except (RetryLater, BudgetSpent, ApiLimitReached) as failed:
                failure, results = failed, failed.completed
        by_record: dict[str, PushResult] = {}
        for result in results:
            by_record.setdefault(result.record_id, result)
        outcomes: list[Outcome] = []
        for person in owed:
            answers = [(r, by_record.get(r)) for r in plan[person.key]]
            outcomes.extend(self._settle(person, answers, failure, person.key in found))
        return outcomes

    def _settle(
        self,
        owed: Owed,
        answers: Sequence[tuple[str, PushResult | None]],
        failure: SalesforceFailure | None,
        found: bool = False,
    ) -> list[Outcome]:
        """One person's outcomes, each record's in their history, and when they are due again."""
        outcomes: list[Outcome] = []
        retry = False
        pause: tuple[WaitingReason, float, str | None] | None = None
        for record_id, result in answers:
            object_type = str(record_type(record_id))
            if result is None:  # the call failed: the record was not answered
                assert failure is not None
                if isinstance(failure, BudgetSpent | ApiLimitReached):
                    pause = self._pause_for(failure)
                    continue
                retry = True
                code = failure.code or type(failure).__name__
                message = str(failure)[:500]
                outcomes.append(Refused(owed.key, record_id, object_type, code, message, True))
            elif result.accepted:
                self.stats.accepted += 1
                outcomes.append(
                    Accepted(
                        owed.key,
                        record_id,
                        object_type,
                        result.field,
                        result.written_id or record_id,
                        result.converted_contact_id,
                        result.answered_at or datetime.now(UTC),
                    )
                )
            elif result.outcome is PushOutcome.LIMIT:
                pause = (WaitingReason.API_LIMIT, LIMIT_PROBE_S, result.message)
            else:
                will_retry = result.outcome is PushOutcome.RETRY
                retry = retry or will_retry
                self.stats.refused += not will_retry
                code, message = result.error_code or "UNKNOWN_ERROR", result.message or ""
                outcomes.append(
                    Refused(owed.key, record_id, object_type, code, message, will_retry)
                )
        if not answers and failure is not None:  # the look-up by email failed
            if isinstance(failure, BudgetSpent | ApiLimitReached):
                pause = self._pause_for(failure)
            else:
                retry = True
        if pause is not None:
            outcomes.append(self._pause(owed, *pause))
        elif retry:
            self._back_off(owed.key)
        else:
            del self.due[owed.key]
            if not found and owed.waiting is not None:  # nothing found by email either
                self.stats.waiting += 1
                detail = "no Salesforce record carries the address" if owed.emails else None
                outcomes.append(Waiting(owed.key, owed.waiting, detail))
        return outcomes

    @staticmethod
    def _pause_for(failure: SalesforceFailure) -> tuple[WaitingReason, float, str | None]:
        if isinstance(failure, BudgetSpent):
            wait_s = (failure.resets_at - datetime.now(UTC)).total_seconds()
            return WaitingReason.BUDGET_SPENT, wait_s, str(failure)
        return WaitingReason.API_LIMIT, LIMIT_PROBE_S, str(failure)

    def _back_off(self, key: str) -> None:
        due = self.due[key]
        delay = BACKOFF_S[min(due.attempts, len(BACKOFF_S) - 1)]
        due.at = self.clock() + delay * random.uniform(0.5, 1.0)  # jitter
        due.attempts += 1
        self.stats.retried += 1

    def _pause(
        self, owed: Owed, reason: WaitingReason, wait_s: float, detail: str | None
    ) -> Waiting:
        until = self.clock() + max(wait_s, 1.0)
        if until > self.paused_until:
            self.paused_why = f"{reason.value}: {detail}" if detail else reason.value
            log.warning("Salesforce push paused for %.0f s: %s", until - self.clock(), detail)
        self.paused_until = max(self.paused_until, until)
        self.due[owed.key].at = self.paused_until
        self.stats.waiting += 1
        return Waiting(owed.key, reason, detail)

    def _save(self, outcomes: Sequence[Outcome], loaded: dict[str, Person] | None = None) -> None:
        settled = self._settled()
        advanced = settled > self.position
        made = self.org.calls_made
        if not outcomes and not advanced and made == self._calls_recorded:
            return
        # The calls' times go with the outcomes: the daily budget's count survives a restart.
        new = made - self._calls_recorded
        calls = self.org.call_times()[-new:] if new > 0 else []
        position = Tracking(PUSHER, settled) if advanced else None
        record_outcomes(self.store, outcomes, position, calls, loaded)
        self._calls_recorded = made
        if advanced:
            self.position = self.stats.position = settled
