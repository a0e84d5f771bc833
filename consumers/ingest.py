"""The ingest consumer: Kafka -> contract -> domain -> event store, exactly once.

Each poll is grouped by partition; each partition's slice is one transaction that stores its
changes together with `Tracking("<topic>:<partition>", last offset)`. A redelivered offset is
filtered out against the stored position (and the store refuses a position it already has), and a
re-produced message is refused by its person's record of seen event ids. Kafka offsets are
committed after the store write, as a hint only: the store is the source of truth.

No single message stops a partition: one that cannot become a stored change, whatever the cause,
is dead-lettered with a code (`DEAD_LETTER_CODES` here, the contract's in adapters.inbound_errors)
and the partition moves on. A broker or store that stops answering is waited for, with backoff.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from eventsourcing.persistence import IntegrityError, PersistenceError, Tracking
from kafka import ConsumerRebalanceListener, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata

from adapters import dead_letter, kafka
from adapters.inbound import ChangeV1, ContractError, decode
from adapters.settings import Settings
from consumers.outage import Outage, StallWatch, describe
from domain.application import Change, ChangeKind, ChangesFailed, OptOutLog, problem
from domain.identity import aggregate_id, person_key
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
POLL_TIMEOUT_MS = 200
SPIN_POLL_TIMEOUT_MS = 20  # while kafka-python spins (see `_poll`)
MAX_SPIN_PAUSE_S = 2.0
PROBE_EVERY_S = 10.0  # without messages for this long, ask the broker whether it is there
KAFKA_CALL_TIMEOUT_MS = 5_000
DEAD_LETTER_CONFIRM_S = 10.0
CLOSE_TIMEOUT_S = 3.0


class GapError(RuntimeError):
    """Messages the store has not recorded no longer exist in Kafka; an operator must decide."""


class _Stopping(Exception):
    """Unwinds a slice that is waiting (for a retry, a broker, a store) when the worker stops."""


def to_change(message: ChangeV1) -> Change:
    """The domain's view of a validated inbound message."""
    how = Provenance(
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
        person_key=person_key(message.person.person_id, message.person.email),
        how=how,
        email=message.person.email,
        salesforce_id=message.person.salesforce_id,
    )


def change_or_refusal(value: bytes | None) -> Change | tuple[str, str]:
    """A Kafka value as a change, or why not as (code, reason) — never an exception."""
    try:
        change = to_change(decode(value))
        refusal = problem(change)
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


class _Rebalances(ConsumerRebalanceListener):
    """Runs on kafka-python's IO thread, so it only notes what changed; the loop acts on it."""

    def __init__(self) -> None:
        self.changed: set[TopicPartition] = set()
        self.lock = threading.Lock()

    def on_partitions_revoked(self, revoked: Any) -> None:
        with self.lock:
            self.changed.update(revoked)

    def on_partitions_assigned(self, assigned: Any) -> None:
        with self.lock:
            self.changed.update(assigned)

    def take(self) -> set[TopicPartition]:
        with self.lock:
            taken, self.changed = self.changed, set()
        return taken


class Ingest:
    """One consumer-group member. Run several processes with the same group to scale out.

    `accept_gaps`: True, or the `topic:partition` names whose lost messages the operator accepts
    to go on without (see `GapError`).
    """

    def __init__(
        self,
        settings: Settings,
        store: OptOutLog,
        *,
        consumer: KafkaConsumer | None = None,
        producer: KafkaProducer | None = None,
        accept_gaps: bool | Collection[str] = (),
    ) -> None:
        self.settings = settings
        self.store = store
        self.accept_gaps = accept_gaps
        self.listener = _Rebalances()
        self.consumer = consumer or kafka.consumer(settings)
        self.consumer.subscribe([settings.topic_inbound], listener=self.listener)
        # Dead letters may carry values up to the topic's limit: compress them on the way out.
        self.producer = producer or kafka.producer(settings, compression_type="gzip")
        self.dead_letters = dead_letter.DeadLetterSender(settings, self.producer)
        self.positions: dict[TopicPartition, int] = {}  # last stored offset per owned partition
        # Partitions (re)assigned since their last check against the store's position.
        self.unchecked: set[TopicPartition] = set()
        # Offsets of the slice being stored that go to the dead-letter topic, with (code, reason),
        # and those whose letter is confirmed (so a retry of the slice sends none twice).
        self.refused: dict[TopicPartition, dict[int, tuple[str, str]]] = {}
        self.lettered: dict[TopicPartition, set[int]] = {}
        # Persons each partition's slices touched: forgotten from the cache when it is revoked.
        self.persons_of: dict[TopicPartition, set[UUID]] = {}
        self.broker = Outage(f"Kafka at {settings.kafka_bootstrap_servers}")
        self.store_outage = Outage(f"the event store at {settings.store_location}")
        self.stalls = StallWatch()
        self.last_contact = time.monotonic()  # the broker last answered (records or a probe)
        self.spin_pause_s = 0.0
        self.stats = IngestStats()
        self.stopping = threading.Event()

    def run(
        self,
        *,
        idle_exit_s: float | None = None,
        until: Callable[[IngestStats], bool] | None = None,
    ) -> IngestStats:
        """Consumes until stopped, or idle for `idle_exit_s`, or `until(stats)` holds."""
        last_activity = time.monotonic()
        try:
            while not self.stopping.is_set():
                try:
                    polled = self._poll()
                    self._ingest(polled)
                    if polled:
                        last_activity = time.monotonic()
                    else:
                        self._idle()
                except _Stopping:
                    break
                except KafkaError as error:
                    if not _transient(error):
                        raise
                    self._wait(self.broker.failed(error))
                    continue
                except PersistenceError as error:  # outside a slice's own retries
                    self._wait(self.store_outage.failed(error))
                    continue
                if until is not None and until(self.stats):
                    break
                if idle_exit_s is not None and time.monotonic() - last_activity > idle_exit_s:
                    break
        except _Stopping:
            pass
        finally:
            self.close()
        return self.stats

    def stop(self) -> None:
        self.stopping.set()

    def close(self) -> None:
        """Bounded: a broker that stopped answering must not hold the worker's exit."""
        self.stalls.close()
        try:
            try:
                self.producer.close(timeout=CLOSE_TIMEOUT_S)  # flushes first
            except KafkaError:
                self.producer.close(timeout=0)
        finally:
            self.consumer.close(autocommit=False, timeout_ms=int(CLOSE_TIMEOUT_S * 1000))

    # -- polling ---------------------------------------------------------------------------

    def _poll(self) -> dict[TopicPartition, list[Any]]:
        """One poll; after a poll that only spun, a pause of our own.

        kafka-python 3.0.12 spins inside `poll(timeout_ms=N)` for all of N while a heartbeat is
        overdue (a broker that stopped answering): the fetch wait is capped by the time to the
        next heartbeat, which is then 0. A poll that used the CPU for most of its time and
        returned nothing is that spin: the next polls are short, with a growing pause between.
        (Polls are not simply short: a group join that completes between two polls is dropped
        and started again by kafka-python, so the normal poll waits long enough for a join.)
        """
        timeout_ms = SPIN_POLL_TIMEOUT_MS if self.spin_pause_s else POLL_TIMEOUT_MS
        began, cpu = time.monotonic(), time.process_time()
        polled: dict[TopicPartition, list[Any]] = self.consumer.poll(timeout_ms=timeout_ms)
        if polled:
            self.spin_pause_s = 0.0
            self._broker_answered()
        elif time.process_time() - cpu > 0.5 * (time.monotonic() - began):
            self.spin_pause_s = min(MAX_SPIN_PAUSE_S, max(0.25, self.spin_pause_s * 2))
        else:
            self.spin_pause_s = 0.0
        return polled

    def _idle(self) -> None:
        if time.monotonic() - self.last_contact > PROBE_EVERY_S:
            self._probe_broker()
        if self.spin_pause_s:
            self._wait(self.spin_pause_s)

    def _probe_broker(self) -> None:
        """Asks the broker for the end of our partitions: quiet is fine, silence is an outage."""
        partitions = sorted(self.consumer.assignment()) or [
            TopicPartition(self.settings.topic_inbound, 0)
        ]
        try:
            self.consumer.end_offsets(partitions, timeout_ms=KAFKA_CALL_TIMEOUT_MS)
        except KafkaError as error:
            if not _transient(error):
                raise
            self.last_contact = time.monotonic()  # the next probe after another interval
            self.broker.failed(error)
            return
        self._broker_answered()

    def _broker_answered(self) -> None:
        self.last_contact = time.monotonic()
        self.broker.answered()

    def _wait(self, seconds: float) -> None:
        if self.stopping.wait(seconds):
            raise _Stopping

    # -- assignment ------------------------------------------------------------------------

    def _check_assignment(self, polled: dict[TopicPartition, list[Any]]) -> None:
        """After a rebalance (it happens inside poll): forget what may have changed, and make each
        newly assigned partition resume where the store ends — or stop if that is gone."""
        for tp in self.listener.take():
            self.positions.pop(tp, None)
            self.unchecked.add(tp)
            # Another member may write these persons now: our cached copies would go stale.
            self.store.forget_persons(self.persons_of.pop(tp, ()))
        self.unchecked &= self.consumer.assignment()
        if not self.unchecked:
            return
        unchecked = sorted(self.unchecked)
        starts = self.consumer.beginning_offsets(unchecked, timeout_ms=KAFKA_CALL_TIMEOUT_MS)
        for tp in unchecked:
            stored = self._stored_position(tp)
            if starts[tp] > stored + 1:
                self._gap(tp, stored + 1, starts[tp] - 1)
                polled.pop(tp, None)
                self.unchecked.discard(tp)
                continue
            records = polled.get(tp)
            next_offset = (
                records[0].offset
                if records
                else self.consumer.position(tp, timeout_ms=KAFKA_CALL_TIMEOUT_MS)
            )
            if next_offset is None:
                continue  # not known yet: checked again after the next poll
            self.unchecked.discard(tp)
            if next_offset > stored + 1:
                log.warning(
                    "%s: the store ends at offset %d but Kafka resumed at %d; re-reading from %d",
                    _tracking_name(tp),
                    stored,
                    next_offset,
                    stored + 1,
                )
                self.consumer.seek(tp, stored + 1)
                polled.pop(tp, None)  # they come again, after the earlier ones

    def _gap(self, tp: TopicPartition, first: int, last: int) -> None:
        """Offsets `first`..`last` were never stored and no longer exist in Kafka."""
        name = _tracking_name(tp)
        if not (self.accept_gaps is True or (self.accept_gaps and name in self.accept_gaps)):
            raise GapError(
                f"{name}: the event store's next offset is {first}, but the topic now begins at "
                f"offset {last + 1}: offsets {first}-{last} ({last - first + 1} messages) no longer "
                "exist in Kafka (retention, deleted records, or a store restored from an old "
                "backup) and were never stored. Stopping. To go on without them, run "
                f"`optout-sync ingest --accept-gap {name}` (or --accept-gaps for every partition); "
                "the accepted gap is recorded in the event store."
            )
        log.warning(
            "%s: accepted gap: offsets %d-%d no longer exist in Kafka and will never be stored; "
            "recording it in the event store and going on from offset %d",
            name,
            first,
            last,
            last + 1,
        )
        user = os.environ.get("USER") or f"uid {os.getuid()}"
        try:
            self.store.record_gap(name, first, last, accepted_by=f"--accept-gap ({user})")
        except IntegrityError:
            self.positions.pop(tp, None)  # another member went past it first
            return
        self.stats.gaps_accepted += 1
        self.positions[tp] = last
        self.consumer.seek(tp, last + 1)

    def _stored_position(self, tp: TopicPartition) -> int:
        if tp not in self.positions:
            with self.stalls.call(f"reading the stored position of {_tracking_name(tp)}"):
                stored = self.store.position(_tracking_name(tp))
            self.positions[tp] = -1 if stored is None else stored
        return self.positions[tp]

    # -- storing ---------------------------------------------------------------------------

    def _ingest(self, polled: dict[TopicPartition, list[Any]]) -> None:
        """Stores each partition's slice; a slice not stored is read again (seek back to it)."""
        stored: set[TopicPartition] = set()
        try:
            self._check_assignment(polled)
            for tp, records in polled.items():
                self._ingest_partition(tp, records)
                stored.add(tp)
        finally:
            for tp, records in polled.items():
                if tp not in stored and tp in self.consumer.assignment():
                    self.consumer.seek(tp, records[0].offset)

    def _ingest_partition(self, tp: TopicPartition, records: Sequence[Any]) -> None:
        stored = self._stored_position(tp)
        fresh = [r for r in records if r.offset > stored]
        self.stats.redelivered += len(records) - len(fresh)
        if not fresh:
            if records and records[-1].offset <= stored:
                self.consumer.seek(tp, stored + 1)
            return
        if fresh[0].offset > stored + 1:
            # Transaction markers leave holes too; only a log start past us is a gap.
            start = self.consumer.beginning_offsets([tp], timeout_ms=KAFKA_CALL_TIMEOUT_MS)[tp]
            if start > stored + 1:
                self._gap(tp, stored + 1, start - 1)
        self._store_slice(tp, fresh, WRITE_ATTEMPTS)

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
            f"the event store refused it in {attempts} attempts ({describe(error)})",
        )
        while self._store_with_retries(tp, remaining, attempts) is not None:
            # Even its position alone, without the message, is refused: the store refuses
            # every write. That is an outage, not this message's fault: wait for it.
            log.error("the event store refuses every write to %s", _tracking_name(tp))
            self._wait(self.store_outage.failed(error))

    def _store_with_retries(
        self, tp: TopicPartition, records: Sequence[Any], attempts: int
    ) -> tuple[Sequence[Any], PersistenceError] | None:
        """None once stored; else what is left of the records and the store's last refusal,
        after `attempts` refusals in a row. A store that does not answer is waited for."""
        refusals = 0
        while True:
            try:
                stored = self._stored_position(tp)
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
                    _tracking_name(tp),
                    describe(error),
                    refusals + 1,
                )
                self._wait(min(2.0, 0.05 * 2**refusals))

    def _store_answers(self, tp: TopicPartition) -> bool:
        try:
            self.store.position(_tracking_name(tp))
        except PersistenceError:
            return False
        return True

    def _write(self, tp: TopicPartition, records: Sequence[Any]) -> None:
        """One transaction: the records' changes and the position after the last of them.
        A record that cannot become a change is dead-lettered (confirmed) and left out."""
        while True:
            changes, sources = self._changes(tp, records)
            try:
                with self.stalls.call(f"a write to the event store ({_tracking_name(tp)})"):
                    batch = self.store.record(
                        changes, Tracking(_tracking_name(tp), records[-1].offset)
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
        self.persons_of.setdefault(tp, set()).update(batch.persons)
        self.stats.polled += len(records)
        self.stats.recorded += batch.recorded
        self.stats.duplicates += batch.duplicates
        self.stats.positions[_tracking_name(tp)] = last
        try:
            self.consumer.commit_async({tp: OffsetAndMetadata(last + 1, "", -1)})
        except KafkaError as error:  # only a hint: the store holds the position
            log.debug("could not commit %s: %s", _tracking_name(tp), describe(error))
        log.info(
            "%s: stored %d changes (%d already recorded, %d dead-lettered) up to offset %d",
            _tracking_name(tp),
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
        for record in records:
            outcome = refused.get(record.offset) or change_or_refusal(record.value)
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


def _transient(error: KafkaError) -> bool:
    """A broker that is away or busy, rather than a mistake that waiting will not mend."""
    return bool(error.retriable)  # timeouts, lost connections, leaders moving, ...


def _tracking_name(tp: TopicPartition) -> str:
    return f"{tp.topic}:{tp.partition}"
