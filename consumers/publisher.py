"""The analytics feed's publisher: follows the event log and publishes each change of a person's
opt-out state, and each Salesforce acceptance, to the outbound topic, exactly once.

Each page of the log is one Kafka transaction. Where to resume is the later of two positions:
the one kept in the store after each commit, and the highest one on the topic's committed records
(a crash between a commit and the store's write). So no record is published twice and none is
skipped. The producer's transactional id is the topic's: a second publisher started by mistake
fences the first, which stops.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from uuid import UUID

import msgspec
from eventsourcing.persistence import Notification, PersistenceError, Tracking
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError, KafkaTimeoutError, ProducerFencedError

from adapters import kafka_clients
from adapters.outbound import (
    POSITION_HEADER,
    SCHEMA_VERSION,
    RecordKind,
    SalesforceWrite,
    StateChangeV1,
    encode,
    kafka_key,
)
from adapters.settings import Settings
from consumers.outage import Outage
from domain.application import ChangeRecorder
from domain.person import Person

log = logging.getLogger(__name__)

PAGE = 1000  # notifications per transaction
POLL_S = 0.2  # how often an idle publisher looks for new events
PERSONS_KEPT = 50_000  # persons whose current state is kept between pages
COMMIT_TIMEOUT_S = 15.0  # a transaction not committed by then: the producer starts over
TAIL = 64  # records read back per partition at first to find the last one published


def tracking_name(config: Settings) -> str:
    return f"feed:{config.topic_state}"


def transactional_id(config: Settings) -> str:
    return f"optout-sync-feed-{config.topic_state}"


@dataclass
class PublishStats:
    read: int = 0  # events read from the log
    published: int = 0  # records committed to the topic
    transactions: int = 0
    position: int = 0  # the log position published up to


class Publisher:
    """Publishes one store's log to one topic. Not shared between threads.

    A broker or store that stops answering is waited for: the producer is dropped and a new one
    starts over as a restarted process would (its `init_transactions` aborts the open transaction,
    and the position is found again), so an outage costs nothing but time.
    """

    def __init__(
        self, config: Settings, store: ChangeRecorder, connect: Callable[[], KafkaProducer]
    ) -> None:
        """Built by `consumers.bootstrap.publisher`; `connect` makes a transactional producer
        that has fenced any earlier publisher of the topic (`init_transactions`)."""
        self.config = config
        self.store = store
        self.connect = connect
        self.stopping = threading.Event()
        self.stats = PublishStats()
        self.records = StateChanges(store)
        self.outage = Outage(f"Kafka at {config.kafka_bootstrap_servers} or the event store")
        self.producer: KafkaProducer | None = None
        self.position = 0
        self.log_end = 0  # the log's last position, as last seen (for the lag)

    def run(self, *, idle_exit_s: float | None = None) -> PublishStats:
        """Publishes until stopped, or until nothing new came for `idle_exit_s`."""
        last_activity = time.monotonic()
        try:
            while not self.stopping.is_set():
                try:
                    if self.producer is None:
                        self._start()
                    if self.step():
                        self.outage.answered()
                        last_activity = time.monotonic()
                        continue
                    self.outage.answered()
                except ProducerFencedError:
                    raise  # another publisher took over: not weather
                except (KafkaError, PersistenceError, TimeoutError) as error:
                    self._drop_producer()
                    self.stopping.wait(self.outage.failed(error))
                    continue
                if idle_exit_s is not None and time.monotonic() - last_activity >= idle_exit_s:
                    break
                self.stopping.wait(POLL_S)
        finally:
            self._drop_producer(timeout_s=3.0)
        return self.stats

    def stop(self) -> None:
        self.stopping.set()

    def not_ready(self) -> list[str]:
        """Why the feed is not being published now (empty: it is), for /readyz."""
        reasons = ["stopping"] if self.stopping.is_set() else []
        if self.outage.ongoing:
            reasons.append(f"{self.outage.what} does not answer")
        elif self.producer is None:
            reasons.append("starting: finding where the feed ends")
        return reasons

    def _start(self) -> None:
        """A producer, and where to resume: the later of the store's and the topic's position."""
        self.producer = self.connect()
        stored = self.store.position(tracking_name(self.config)) or 0
        self.position = max(stored, last_published(self.config))
        self.stats.position = self.position
        log.info(
            "publishing the feed to %s from log position %d", self.config.topic_state, self.position
        )

    def _drop_producer(self, timeout_s: float = 0.0) -> None:
        if self.producer is not None:
            with contextlib.suppress(KafkaError):
                self.producer.close(timeout=timeout_s)
            self.producer = None

    def step(self) -> bool:
        """One page: its records in one transaction, then the position in the store."""
        page = self.store.recorder.select_notifications(
            self.position, PAGE, inclusive_of_start=False
        )
        if not page:
            self.log_end = self.position
            return False
        assert self.producer is not None
        records = [record for n in page for record in self.records.of(n)]
        if records:
            self.producer.begin_transaction()
            for record in records:
                self.producer.send(
                    self.config.topic_state,
                    key=kafka_key(record),
                    value=encode(record),
                    headers=[(POSITION_HEADER, str(record.position).encode("ascii"))],
                )
            _commit(self.producer, COMMIT_TIMEOUT_S)
            self.stats.transactions += 1
            self.stats.published += len(records)
        self.position = page[-1].id
        self.log_end = max(self.log_end, self.position)
        self.stats.read += len(page)
        self.stats.position = self.position
        self._keep_position()
        return True

    def _keep_position(self) -> None:
        """The store's copy of the position: only a shortcut for the next start (the topic's
        records say as much), so a failed write is retried with the next page."""
        try:
            self.store.save_with_position([], Tracking(tracking_name(self.config), self.position))
        except Exception as error:  # the topic still knows where we are
            log.warning(
                "could not keep the feed's position in the store (%s)", type(error).__name__
            )


class StateChanges:
    """Turns stored events into the feed's records. A person's state before and after each event
    is the domain's own fold: the person as it was before the event (the store reads any
    version, and the persons last seen are kept) with the event applied."""

    def __init__(self, store: ChangeRecorder) -> None:
        self.store = store
        self._persons: OrderedDict[UUID, Person] = OrderedDict()

    def of(self, notification: Notification) -> list[StateChangeV1]:
        """The feed's records for one stored event: none, or one."""
        event = self.store.mapper.to_domain_event(notification)
        if not isinstance(event, Person.Event | Person.Registered):
            return []  # not a person's (an accepted input gap)
        person_id = event.originator_id
        before = self._person_before(person_id, event.originator_version)
        was_opted_out = before is not None and before.opted_out
        person = event.mutate(before)
        assert isinstance(person, Person)
        self._keep(person)
        record = StateChangeV1(
            schema_version=SCHEMA_VERSION,
            kind=RecordKind.OPT_OUT_CHANGED,
            dedup_key=f"{person_id}:{event.originator_version}",
            person=person_id,
            position=notification.id,
            recorded_at=event.timestamp,
            opted_out=person.opted_out,
            salesforce_id=person.salesforce_id,
        )
        flipped = person.opted_out != was_opted_out
        if isinstance(event, Person.Unsubscribed | Person.UnsubscribeRemoved) and flipped:
            return [
                msgspec.structs.replace(
                    record,
                    change="unsubscribed"
                    if isinstance(event, Person.Unsubscribed)
                    else "unsubscribe_removed",
                    source=event.source,
                    channel=event.channel,
                    actor_kind=event.actor_kind,
                    occurred_at=event.occurred_at,
                )
            ]
        if isinstance(event, Person.OptOutAccepted):
            write = SalesforceWrite(
                record_id=event.record_id,
                object_type=event.object_type,
                field=event.field,
                written_id=event.written_id,
                accepted_at=event.accepted_at,
            )
            return [
                msgspec.structs.replace(
                    record, kind=RecordKind.SALESFORCE_ACCEPTED, salesforce=write
                )
            ]
        return []

    def _person_before(self, person_id: UUID, version: int) -> Person | None:
        """The person as it was just before its event `version`."""
        person = self._persons.get(person_id)
        if person is not None and person.version == version - 1:
            return person
        if version == 1:
            return None
        loaded: Person = self.store.repository.get(person_id, version=version - 1)
        return loaded

    def _keep(self, person: Person) -> None:
        self._persons[person.id] = person
        self._persons.move_to_end(person.id)
        if len(self._persons) > PERSONS_KEPT:
            self._persons.popitem(last=False)


def _commit(producer: KafkaProducer, timeout_s: float) -> None:
    """`commit_transaction`, bounded. kafka-python 3.0.x waits for the commit without limit (the
    Java client stops at max.block.ms), so a broker gone mid-commit would hang the publisher; on
    a timeout the caller drops the producer, and the next one's `init_transactions` completes
    or aborts the transaction, whichever the broker had begun."""
    producer.flush(timeout=timeout_s)  # KafkaTimeoutError; a failed send fails the commit below
    result = producer._transaction_manager.begin_commit()
    producer._sender.wakeup()
    if not result.wait(timeout_ms=int(timeout_s * 1000)):
        raise KafkaTimeoutError(
            f"the feed's transaction was not committed within {timeout_s:.0f} s"
        )


def last_published(config: Settings) -> int:
    """The highest log position among the topic's committed records (0 if none), reading each
    partition back from its end until a committed record is found."""
    reader = KafkaConsumer(
        bootstrap_servers=config.kafka_bootstrap_servers,
        client_id=kafka_clients.CLIENT_ID,
        group_id=None,
        enable_auto_commit=False,
        isolation_level="read_committed",
        request_timeout_ms=int(config.kafka_connect_timeout_s * 1000) + 1000,
    )
    try:
        partitions = [
            TopicPartition(config.topic_state, p)
            for p in sorted(reader.partitions_for_topic(config.topic_state) or ())
        ]
        if not partitions:
            return 0
        timeout_ms = int(config.kafka_connect_timeout_s * 1000)
        starts = reader.beginning_offsets(partitions, timeout_ms=timeout_ms)
        ends = reader.end_offsets(partitions, timeout_ms=timeout_ms)
        return max(
            (_last_in(reader, tp, starts[tp], ends[tp], timeout_ms) for tp in partitions),
            default=0,
        )
    finally:
        reader.close()


def _last_in(
    reader: KafkaConsumer, tp: TopicPartition, start: int, end: int, timeout_ms: int
) -> int:
    back = TAIL
    while end > start:
        first = max(start, end - back)
        found = _highest(reader, tp, first, end, timeout_ms)
        if found or first == start:
            return found
        back *= 4  # only markers and aborted records there: read further back
    return 0


def _highest(
    reader: KafkaConsumer, tp: TopicPartition, first: int, end: int, timeout_ms: int
) -> int:
    reader.assign([tp])
    reader.seek(tp, first)
    highest = 0
    deadline = time.monotonic() + timeout_ms / 1000
    while reader.position(tp, timeout_ms=timeout_ms) < end:
        if time.monotonic() > deadline:
            raise TimeoutError(f"reading {tp.topic}:{tp.partition} back from its end timed out")
        for records in reader.poll(timeout_ms=500).values():
            for record in records:
                for name, value in record.headers or ():
                    if name == POSITION_HEADER:
                        highest = max(highest, int(value))
    return highest
