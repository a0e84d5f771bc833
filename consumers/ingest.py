"""The ingest consumer: Kafka -> contract -> domain -> event store, exactly once.

Each poll is grouped by partition; each partition's slice is one transaction that stores its
changes together with `Tracking("<topic>:<partition>", last offset)`. A redelivered offset is
filtered out against the stored position (and the store refuses a position it already has), and a
re-produced message is refused by its person's record of seen event ids. Kafka offsets are
committed after the store write, as a hint only: the store is the source of truth.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from eventsourcing.persistence import IntegrityError, Tracking
from kafka import ConsumerRebalanceListener, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.structs import OffsetAndMetadata

from adapters import dead_letter, kafka_clients
from adapters.event_store import address_keys
from adapters.inbound import ChangeV1, ContractError, decode
from adapters.settings import Settings
from domain.application import Change, ChangeKind, OptOutLog, problem
from domain.identity import AddressKeys, person_key
from domain.person import Provenance

log = logging.getLogger(__name__)
_WRITE_ATTEMPTS = 10


def to_change(message: ChangeV1, keys: AddressKeys) -> Change:
    """The domain's view of a validated inbound message: a person id names a person, an email
    alone names the address; the clear address travels only to the erasable index."""
    email = message.person.email
    mailbox = keys.key_of(email) if email is not None else None
    person_id = message.person.person_id
    key = person_key(person_id) if person_id else mailbox
    assert key is not None  # the contract refuses a person with neither
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
        person_key=key,
        how=how,
        mailbox=mailbox,
        email=email,
        salesforce_id=message.person.salesforce_id,
    )


@dataclass
class IngestStats:
    polled: int = 0
    recorded: int = 0
    duplicates: int = 0
    redelivered: int = 0
    dead_lettered: int = 0
    retries: int = 0
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
    """One consumer-group member. Run several processes with the same group to scale out."""

    def __init__(
        self,
        settings: Settings,
        store: OptOutLog,
        *,
        consumer: KafkaConsumer | None = None,
        producer: KafkaProducer | None = None,
        keys: AddressKeys | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.keys = keys or address_keys(settings)
        self.listener = _Rebalances()
        self.consumer = consumer or kafka_clients.consumer(settings)
        self.consumer.subscribe([settings.topic_inbound], listener=self.listener)
        # Dead letters may carry values up to the topic's limit: compress them on the way out.
        self.producer = producer or kafka_clients.producer(settings, compression_type="gzip")
        self.dead_letters = dead_letter.DeadLetterSender(settings, self.producer)
        self.positions: dict[TopicPartition, int] = {}  # last stored offset per owned partition
        # Partitions (re)assigned since their last check against the store's position.
        self.unchecked: set[TopicPartition] = set()
        # Offsets dead-lettered by a slice that is not stored yet (so a retry sends none twice).
        self.sent_to_dead_letter: dict[TopicPartition, set[int]] = {}
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
                polled = self.consumer.poll(timeout_ms=200)
                self._check_assignment(polled)
                if polled:
                    last_activity = time.monotonic()
                    for tp, records in polled.items():
                        self._ingest_partition(tp, records)
                if until is not None and until(self.stats):
                    break
                if idle_exit_s is not None and time.monotonic() - last_activity > idle_exit_s:
                    break
        finally:
            self.close()
        return self.stats

    def stop(self) -> None:
        self.stopping.set()

    def close(self) -> None:
        try:
            self.producer.close(timeout=10)  # flushes first
        finally:
            self.consumer.close(autocommit=False)

    def _stored_position(self, tp: TopicPartition) -> int:
        if tp not in self.positions:
            stored = self.store.position(_tracking_name(tp))
            self.positions[tp] = -1 if stored is None else stored
        return self.positions[tp]

    def _check_assignment(self, polled: dict[TopicPartition, Any]) -> None:
        """After a rebalance (it happens inside poll): forget what may have changed, and make each
        newly assigned partition resume where the store ends."""
        for tp in self.listener.take():
            self.positions.pop(tp, None)
            self.unchecked.add(tp)
        assigned = self.consumer.assignment()
        self.unchecked &= assigned
        for tp in list(self.unchecked):
            records = polled.get(tp)
            next_offset = records[0].offset if records else self.consumer.position(tp)
            if self._resume_from_store(tp, next_offset):
                polled.pop(tp, None)  # they come again, after the earlier ones

    def _resume_from_store(self, tp: TopicPartition, first_offset: int) -> bool:
        """On a newly assigned partition, go back to the store's position if Kafka's committed
        offset is ahead of it (a restored or replaced store): the store is the truth."""
        self.unchecked.discard(tp)
        stored = self._stored_position(tp)
        if first_offset <= stored + 1:
            return False
        log.warning(
            "%s: the store ends at offset %d but Kafka resumed at %d; re-reading from %d",
            _tracking_name(tp),
            stored,
            first_offset,
            stored + 1,
        )
        self.consumer.seek(tp, stored + 1)
        return True

    def _ingest_partition(self, tp: TopicPartition, records: Sequence[Any]) -> None:
        for attempt in range(_WRITE_ATTEMPTS):
            stored = self._stored_position(tp)
            fresh = [r for r in records if r.offset > stored]
            self.stats.redelivered += len(records) - len(fresh)
            if not fresh:
                if records and records[-1].offset <= stored:
                    self.consumer.seek(tp, stored + 1)
                return
            try:
                self._store(tp, fresh)
                return
            except IntegrityError:
                # Another member wrote this partition or these persons first (a rebalance
                # overlap): reload the truth from the store and try again with what is left.
                self.stats.retries += 1
                self.positions.pop(tp, None)
                self.store.forget_cached_persons()
                log.info("store refused a write to %s; retrying (attempt %d)", tp, attempt + 1)
                self.stopping.wait(min(2.0, 0.05 * 2**attempt))  # back off, unless stopping
        raise RuntimeError(f"could not store {_tracking_name(tp)} in {_WRITE_ATTEMPTS} attempts")

    def _store(self, tp: TopicPartition, records: Sequence[Any]) -> None:
        changes: list[Change] = []
        rejected = 0
        for record in records:
            try:
                message = decode(record.value, max_skew=self.settings.max_clock_skew)
                change = to_change(message, self.keys)
            except ContractError as error:
                self._dead_letter(tp, record, error.code, error.reason)
                rejected += 1
                continue
            refusal = problem(change)
            if refusal is not None:
                self._dead_letter(tp, record, "refused_by_domain", refusal)
                rejected += 1
                continue
            changes.append(change)
        if rejected:
            self.dead_letters.confirm()  # durable before the position moves past them
        last = records[-1].offset
        try:
            batch = self.store.record(changes, Tracking(_tracking_name(tp), last))
        except Exception:
            self.store.forget_cached_persons()
            raise
        self.positions[tp] = last
        self.sent_to_dead_letter.pop(tp, None)
        self.stats.polled += len(records)
        self.stats.recorded += batch.recorded
        self.stats.duplicates += batch.duplicates
        self.stats.dead_lettered += rejected
        self.stats.positions[_tracking_name(tp)] = last
        self.consumer.commit_async({tp: OffsetAndMetadata(last + 1, "", -1)})
        log.info(
            "%s: stored %d changes (%d already recorded, %d dead-lettered) up to offset %d",
            _tracking_name(tp),
            batch.recorded,
            batch.duplicates,
            rejected,
            last,
        )

    def _dead_letter(self, tp: TopicPartition, record: Any, code: str, reason: str) -> None:
        sent = self.sent_to_dead_letter.setdefault(tp, set())
        if record.offset in sent:
            return  # already confirmed by an earlier attempt at this slice
        self.dead_letters.send(record, code, reason)
        sent.add(record.offset)
        log.warning(
            "dead-lettered %s:%d@%d: %s", record.topic, record.partition, record.offset, code
        )


def _tracking_name(tp: TopicPartition) -> str:
    return f"{tp.topic}:{tp.partition}"
