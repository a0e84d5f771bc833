"""Storing one partition's slice of messages: one transaction with the position after it, and no
message that keeps the slice from being stored.

A message that cannot become a change — whatever the cause — is dead-lettered with a code
(`DEAD_LETTER_CODES`; the contract's own are adapters.inbound_errors.CODES) and left out. A slice
the store keeps refusing is narrowed down, by halves, to the messages it refuses, and those are
dead-lettered; a store that does not answer is waited for. Dead letters are confirmed before the
position moves past them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from eventsourcing.persistence import IntegrityError, PersistenceError, Tracking
from kafka import KafkaProducer, TopicPartition
from kafka.errors import KafkaError

from adapters import dead_letter
from adapters.inbound import ChangeV1, ContractError, decode
from adapters.inbound_fast import fast_change
from adapters.settings import Settings
from consumers.outage import Outage, StallWatch, describe
from domain.application import Change, ChangeKind, ChangeRecorder, ChangesFailed, refusal_of
from domain.identity import AddressKeys, aggregate_id, person_key
from domain.person import Provenance

log = logging.getLogger(__name__)

# Dead-letter codes of the ingest itself, beside the contract's (docs/inbound-contract.md).
DEAD_LETTER_CODES: dict[str, str] = {
    "refused_by_domain": "the domain refuses the change (checked before anything is recorded)",
    "domain_error": "turning the message into a stored change raised; the reason names the error",
    "refused_by_store": "the event store refused to store this message in every attempt, alone",
}
WRITE_ATTEMPTS = 10  # a slice refused this many times in a row is searched for what is refused
ISOLATION_ATTEMPTS = 3  # for each part of that search
DEAD_LETTER_CONFIRM_S = 10.0


def to_change(message: ChangeV1, keys: AddressKeys) -> Change:
    """The domain's view of a validated inbound message: a person id names a person, an email
    alone names the address; the clear address travels only to the erasable index."""
    email = message.person.email
    mailbox = keys.key_of(email) if email is not None else None
    person_id = message.person.person_id
    key = person_key(person_id) if person_id else mailbox
    assert key is not None  # the contract refuses a person with neither
    provenance = Provenance(
        event_id=message.event_id,
        source=message.source,
        actor_kind=message.actor.kind,
        actor_id=message.actor.id,
        actor_name=message.actor.name,
        channel=message.channel,
        occurred_at=message.occurred_at,
        reason=message.reason,
    )
    return Change(
        kind=ChangeKind(message.type),
        person_key=key,
        provenance=provenance,
        mailbox=mailbox,
        email=email,
        salesforce_id=message.person.salesforce_id,
    )


def change_or_refusal(
    value: bytes | None, keys: AddressKeys, max_skew: timedelta, now: datetime | None = None
) -> Change | tuple[str, str]:
    """A Kafka value as a change, or why not as (code, reason) — never an exception. `now`:
    what a future `occurred_at` is measured against (the current time by default). A plainly
    well-formed value is parsed once (`fast_change`), with the same result."""
    try:
        change = fast_change(value, keys, max_skew, now)
        if change is None:  # not plainly well-formed: the careful path names the fault
            change = to_change(decode(value, max_skew=max_skew, now=now), keys)
        refusal = refusal_of(change)
    except ContractError as error:
        return error.code, error.reason
    except Exception as error:  # whatever it is, it is this message's, not the partition's
        return "domain_error", describe(error)
    return change if refusal is None else ("refused_by_domain", refusal)


@dataclass
class IngestStats:
    polled: int = 0
    recorded: int = 0
    duplicates: int = 0
    redelivered: int = 0
    dead_lettered: int = 0
    retries: int = 0
    gaps_accepted: int = 0
    positions: dict[str, int] = field(default_factory=dict)


class SliceWriter:
    """The store side of one consumer-group member: stored positions, the persons each partition
    touched (forgotten from the cache when it moves), and the slices' dead letters."""

    def __init__(
        self,
        settings: Settings,
        store: ChangeRecorder,
        producer: KafkaProducer,
        stats: IngestStats,
        wait: Callable[[float], None],
        keys: AddressKeys,
    ) -> None:
        self.settings = settings
        self.store = store
        self.keys = keys
        self.producer = producer
        self.stats = stats
        self._wait = wait  # sleeps, or raises when the worker stops
        self.dead_letters = dead_letter.DeadLetterSender(settings, producer)
        self.positions: dict[TopicPartition, int] = {}  # last stored offset per owned partition
        # Offsets of the slice being stored that go to the dead-letter topic, with (code, reason),
        # and those whose letter is confirmed (so a retry of the slice sends none twice).
        self.refused: dict[TopicPartition, dict[int, tuple[str, str]]] = {}
        self.lettered: dict[TopicPartition, set[int]] = {}
        # Persons each partition's slices touched: forgotten from the cache when it moves.
        self.persons_of: dict[TopicPartition, set[UUID]] = {}
        self.store_outage = Outage(f"the event store at {settings.store_location}")
        self.stalls = StallWatch()

    def close(self) -> None:
        self.stalls.close()

    def stored_position(self, tp: TopicPartition) -> int:
        if tp not in self.positions:
            with self.stalls.call(f"reading the stored position of {tracking_name(tp)}"):
                stored = self.store.position(tracking_name(tp))
            self.positions[tp] = -1 if stored is None else stored
        return self.positions[tp]

    def moved(self, tp: TopicPartition) -> None:
        """The partition was revoked or assigned: another member may write it and its persons."""
        self.positions.pop(tp, None)
        self.store.forget_persons(self.persons_of.pop(tp, ()))

    def record_gap(self, tp: TopicPartition, first: int, last: int, accepted_by: str) -> bool:
        """Records an accepted gap and moves the position past it; False if another member
        already went past it."""
        try:
            self.store.record_gap(tracking_name(tp), first, last, accepted_by=accepted_by)
        except IntegrityError:
            self.positions.pop(tp, None)
            return False
        self.positions[tp] = last
        self.stats.gaps_accepted += 1
        return True

    def save(self, tp: TopicPartition, records: Sequence[Any]) -> None:
        """Stores the records beyond the stored position (raises only to stop or for a broker
        that cannot take the dead letters: then nothing past the stored position is lost)."""
        self._store_slice(tp, records, WRITE_ATTEMPTS)

    def _store_slice(self, tp: TopicPartition, records: Sequence[Any], attempts: int) -> None:
        """Stores the records; a part the store keeps refusing is narrowed down, by halves, to
        the records it refuses, and those are dead-lettered."""
        refused = self._store_with_retries(tp, records, attempts)
        if refused is None:
            return
        remaining, error = refused
        if len(remaining) > 1:
            half = len(remaining) // 2
            self._store_slice(tp, remaining[:half], ISOLATION_ATTEMPTS)
            self._store_slice(tp, remaining[half:], ISOLATION_ATTEMPTS)
            return
        record = remaining[0]
        self.refused.setdefault(tp, {})[record.offset] = (
            "refused_by_store",
            f"the event store refused it in every attempt, alone and with its slice "
            f"({describe(error)})",
        )
        while self._store_with_retries(tp, remaining, attempts) is not None:
            # Even its position alone, without the message, is refused: the store refuses
            # every write. That is an outage, not this message's fault: wait for it.
            log.error("the event store refuses every write to %s", tracking_name(tp))
            self._wait(self.store_outage.failed(error))

    def _store_with_retries(
        self, tp: TopicPartition, records: Sequence[Any], attempts: int
    ) -> tuple[Sequence[Any], PersistenceError] | None:
        """None once stored; else what is left of the records and the store's last refusal,
        after `attempts` refusals in a row. A store that does not answer is waited for."""
        refusals = 0
        while True:
            try:
                stored = self.stored_position(tp)
                records = [r for r in records if r.offset > stored]
                if not records:
                    return None  # another member stored them meanwhile
                self._write(tp, records)
                self.store_outage.answered()
                return None
            except PersistenceError as error:
                self.positions.pop(tp, None)  # read the truth again
                if not isinstance(error, IntegrityError) and not self._store_answers(tp):
                    self._wait(self.store_outage.failed(error))
                    continue
                refusals += 1
                self.stats.retries += 1
                if refusals >= attempts:
                    return records, error
                # Often another member wrote this partition or these persons first (a rebalance
                # overlap): try again with what is left, on the truth read afresh.
                log.info(
                    "store refused a write to %s (%s); retrying (attempt %d)",
                    tracking_name(tp),
                    describe(error),
                    refusals + 1,
                )
                self._wait(min(2.0, 0.05 * 2**refusals))

    def _store_answers(self, tp: TopicPartition) -> bool:
        """A read: a store that refuses a write but answers is not down (eventsourcing retries a
        read of a store that is down for a while, hence the watch)."""
        try:
            with self.stalls.call("a read of the event store after a failed write"):
                self.store.position(tracking_name(tp))
        except PersistenceError:
            return False
        return True

    def _write(self, tp: TopicPartition, records: Sequence[Any]) -> None:
        """One transaction: the records' changes and the position after the last of them.
        A record that cannot become a change is dead-lettered (confirmed) and left out."""
        while True:
            changes, sources = self._changes(tp, records)
            try:
                with self.stalls.call(f"a write to the event store ({tracking_name(tp)})"):
                    batch = self.store.record(
                        changes, Tracking(tracking_name(tp), records[-1].offset)
                    )
            except ChangesFailed as failed:
                self.store.forget_persons({aggregate_id(c.person_key) for c in changes})
                for index, error in failed.failures.items():
                    reason = f"the domain raised {describe(error)}"
                    self.refused.setdefault(tp, {})[sources[index].offset] = (
                        "domain_error",
                        reason,
                    )
                continue  # again, without them
            except BaseException:
                # The cached persons may hold events that were never stored.
                self.store.forget_persons({aggregate_id(c.person_key) for c in changes})
                raise
            break
        last = records[-1].offset
        self.positions[tp] = last
        # What this slice refused is settled; what lies beyond it (a part not stored yet) is not.
        self.refused[tp] = {o: why for o, why in self.refused.get(tp, {}).items() if o > last}
        self.lettered[tp] = {o for o in self.lettered.get(tp, ()) if o > last}
        self.persons_of.setdefault(tp, set()).update(batch.touched())
        self.stats.polled += len(records)
        self.stats.recorded += batch.recorded
        self.stats.duplicates += batch.duplicates
        self.stats.positions[tracking_name(tp)] = last
        log.info(
            "%s: stored %d changes (%d already recorded, %d dead-lettered) up to offset %d",
            tracking_name(tp),
            batch.recorded,
            batch.duplicates,
            len(records) - len(changes),
            last,
        )

    def _changes(
        self, tp: TopicPartition, records: Sequence[Any]
    ) -> tuple[list[Change], list[Any]]:
        """The changes of the records (and the record of each); the others dead-lettered."""
        changes: list[Change] = []
        sources: list[Any] = []
        letters: list[tuple[Any, str, str]] = []
        refused = self.refused.setdefault(tp, {})
        now = datetime.now(UTC)  # once a slice: the records arrived together
        for record in records:
            outcome = refused.get(record.offset) or change_or_refusal(
                record.value, self.keys, self.settings.max_clock_skew, now
            )
            if isinstance(outcome, Change):
                changes.append(outcome)
                sources.append(record)
            else:
                refused[record.offset] = outcome
                letters.append((record, *outcome))
        self._send_dead_letters(tp, letters)
        return changes, sources

    def _send_dead_letters(
        self, tp: TopicPartition, letters: Sequence[tuple[Any, str, str]]
    ) -> None:
        """Sends and confirms the letters not confirmed yet: durable before the position moves
        past them. A failed confirmation raises (the slice is not stored) and they are sent again."""
        done = self.lettered.setdefault(tp, set())
        todo = [letter for letter in letters if letter[0].offset not in done]
        if not todo:
            return
        for record, code, reason in todo:
            self.dead_letters.send(record, code, reason)
            log.warning(
                "dead-lettered %s:%d@%d: %s", record.topic, record.partition, record.offset, code
            )
        try:
            with self.stalls.call("confirming dead letters"):
                self.dead_letters.confirm(timeout_s=DEAD_LETTER_CONFIRM_S)
        except KafkaError:
            self.dead_letters = dead_letter.DeadLetterSender(self.settings, self.producer)
            raise
        done.update(record.offset for record, _, _ in todo)
        self.stats.dead_lettered += len(todo)


def tracking_name(tp: TopicPartition) -> str:
    return f"{tp.topic}:{tp.partition}"
