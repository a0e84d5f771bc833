"""The ingest consumer: Kafka -> contract -> domain -> event store, exactly once.

Each poll is grouped by partition; each partition's slice is one transaction that stores its
changes together with `Tracking("<topic>:<partition>", last offset)`. A redelivered offset is
filtered out against the stored position (and the store refuses a position it already has), and a
re-produced message is refused by its person's record of seen event ids. Kafka offsets are
committed after the store write, as a hint only: the store is the source of truth.

No single message stops a partition (consumers.slice_writer stores the slices), and a broker or
store that stops answering is waited for, with backoff. Messages the store never recorded that no
longer exist in Kafka stop the worker until an operator accepts the gap (`GapError`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Collection, Sequence
from typing import Any

from eventsourcing.persistence import PersistenceError
from kafka import ConsumerRebalanceListener, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata

from adapters.settings import Settings
from consumers.collection import Collections
from consumers.outage import Outage, describe
from consumers.slice_writer import (
    DEAD_LETTER_CODES,
    WRITE_ATTEMPTS,
    IngestStats,
    SliceWriter,
    to_change,
    tracking_name,
)
from domain.application import ChangeRecorder
from domain.identity import AddressKeys

__all__ = [
    "DEAD_LETTER_CODES",
    "WRITE_ATTEMPTS",
    "GapError",
    "Ingest",
    "IngestStats",
    "StoreAheadError",
    "to_change",
]

log = logging.getLogger(__name__)

POLL_TIMEOUT_MS = 200
SPIN_POLL_TIMEOUT_MS = 20  # while kafka-python spins (see `_poll`)
MAX_SPIN_PAUSE_S = 2.0
# An empty poll normally uses ~1% of a core (2% at most, measured); a spin all it can get, which
# on a busy machine may be well under a whole core.
SPIN_CPU_SHARE = 0.25
PROBE_EVERY_S = 10.0  # without messages for this long, ask the broker whether it is there
KAFKA_CALL_TIMEOUT_MS = 5_000
CLOSE_TIMEOUT_S = 3.0


class GapError(RuntimeError):
    """Messages the store has not recorded no longer exist in Kafka; an operator must decide."""


class StoreAheadError(GapError):
    """The store has recorded offsets the topic never had: the topic was deleted and created
    again (or the store is another cluster's). Its new messages would be skipped as stored."""


class _Stopping(Exception):
    """Unwinds a slice that is waiting (for a retry, a broker, a store) when the worker stops."""


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
        store: ChangeRecorder,
        *,
        consumer: KafkaConsumer,
        producer: KafkaProducer,
        keys: AddressKeys,
        accept_gaps: bool | Collection[str] = (),
    ) -> None:
        """Built by `consumers.bootstrap.ingest`, the composition root."""
        self.settings = settings
        self.store = store
        self.accept_gaps = accept_gaps
        self.keys = keys
        self.listener = _Rebalances()
        self.consumer = consumer
        self.consumer.subscribe([settings.topic_inbound], listener=self.listener)
        self.producer = producer
        self.stats = IngestStats()
        self.writer = SliceWriter(settings, store, self.producer, self.stats, self._wait, self.keys)
        # Partitions (re)assigned since their last check against the store's position.
        self.unchecked: set[TopicPartition] = set()
        self.broker = Outage(f"Kafka at {settings.kafka_bootstrap_servers}")
        self.last_contact = time.monotonic()  # the broker last answered (records or a probe)
        self.spin_pause_s = 0.0
        self.stopping = threading.Event()
        self.collections = Collections()
        # For /metrics and /readyz, read on another thread: replaced whole, never mutated.
        self.held: frozenset[TopicPartition] = frozenset()
        self.lag: dict[TopicPartition, int] = {}

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
                    self._note_lag()
                    with self.collections.storing():
                        self._ingest(polled)
                    if polled:
                        self._note_lag()
                        self.collections.after_poll()
                        last_activity = time.monotonic()
                    else:
                        self._idle()
                except _Stopping:
                    break
                except KafkaError as error:
                    if not _transient(error):
                        raise
                    self._wait(self.broker.failed(error))
                except PersistenceError as error:  # outside a slice's own retries
                    self._wait(self.writer.store_outage.failed(error))
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

    def not_ready(self) -> list[str]:
        """Why this member cannot do its work now (empty: ready), for /readyz."""
        reasons = []
        if self.stopping.is_set():
            reasons.append("stopping")
        if not self.held:
            reasons.append(f"holds no partition of {self.settings.topic_inbound} (yet)")
        if self.broker.ongoing:
            reasons.append(f"{self.broker.what} does not answer")
        if self.writer.store_outage.ongoing:
            reasons.append(f"{self.writer.store_outage.what} does not answer")
        stalled = self.writer.stalls.stalled()
        if stalled is not None:
            reasons.append(f"{stalled[0]} has not returned for {stalled[1]:.0f} s")
        return reasons

    def close(self) -> None:
        """Bounded: a broker that stopped answering must not hold the worker's exit."""
        self.collections.close()
        self.writer.close()
        try:
            try:
                self.producer.close(timeout=CLOSE_TIMEOUT_S)  # flushes first
            except KafkaError:  # unconfirmed letters: their slice is not stored, nothing is lost
                with contextlib.suppress(KafkaError):
                    self.producer.close(timeout=0)
        finally:
            self.consumer.close(autocommit=False, timeout_ms=int(CLOSE_TIMEOUT_S * 1000))

    # -- polling ---------------------------------------------------------------------------

    def _poll(self) -> dict[TopicPartition, list[Any]]:
        """One poll; after a poll that only spun, a pause of our own.

        kafka-python 3.0.12 spins inside `poll(timeout_ms=N)` for all of N while a heartbeat is
        overdue (a broker that stopped answering): the fetch wait is capped by the time to the
        next heartbeat, which is then 0. A poll that used the CPU for much of its time and
        returned nothing is that spin: the next polls are short, with a growing pause between.
        (Polls are not simply short: a group join that completes between two polls is dropped
        and started again by kafka-python, so the normal poll waits long enough for a join.)

        Only a broker that does not answer a probe makes the polls short, and one that answers
        again ends them. The spin is measured on the process's CPU (kafka-python's IO thread
        spins too), so on a busy machine an empty poll during a join could pass for one; the
        worker then stayed in short polls, its join dropped again and again, and stored nothing
        for minutes (seen under load in session 7, the main thread in this pause).
        """
        timeout_ms = SPIN_POLL_TIMEOUT_MS if self.spin_pause_s else POLL_TIMEOUT_MS
        began, cpu = time.monotonic(), time.process_time()
        polled: dict[TopicPartition, list[Any]] = self.consumer.poll(timeout_ms=timeout_ms)
        if polled:
            self.spin_pause_s = 0.0
            self._broker_answered()
        elif time.process_time() - cpu > SPIN_CPU_SHARE * (time.monotonic() - began):
            if self.spin_pause_s or not self._probe_broker():
                self.spin_pause_s = min(MAX_SPIN_PAUSE_S, max(0.25, self.spin_pause_s * 2))
        else:
            self.spin_pause_s = 0.0
        return polled

    def _note_lag(self) -> None:
        """Messages in Kafka this member has not stored yet, per partition it holds (as far as
        its fetches have seen the partition's end)."""
        held = frozenset(self.consumer.assignment())
        lag = {}
        for tp in held:
            end, stored = self.consumer.highwater(tp), self.writer.positions.get(tp)
            if end is not None and stored is not None:
                lag[tp] = max(0, end - stored - 1)
        self.held, self.lag = held, lag

    def _idle(self) -> None:
        if time.monotonic() - self.last_contact > PROBE_EVERY_S:
            self._probe_broker()
        if self.spin_pause_s:
            self._wait(self.spin_pause_s)

    def _probe_broker(self) -> bool:
        """Asks the broker for the end of our partitions: quiet is fine, silence is an outage.
        Whether it answered."""
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
            return False
        self._broker_answered()
        return True

    def _broker_answered(self) -> None:
        self.last_contact = time.monotonic()
        self.broker.answered()
        self.spin_pause_s = 0.0  # polls long enough for a group join (see `_poll`)

    def _wait(self, seconds: float) -> None:
        if self.stopping.wait(seconds):
            raise _Stopping

    # -- assignment ------------------------------------------------------------------------

    def _check_assignment(self, polled: dict[TopicPartition, list[Any]]) -> None:
        """After a rebalance (it happens inside poll): forget what may have changed, and make each
        newly assigned partition resume where the store ends — or stop if that is gone."""
        for tp in self.listener.take():
            self.writer.moved(tp)
            self.unchecked.add(tp)
        self.unchecked &= self.consumer.assignment()
        if not self.unchecked:
            return
        unchecked = sorted(self.unchecked)
        starts = self.consumer.beginning_offsets(unchecked, timeout_ms=KAFKA_CALL_TIMEOUT_MS)
        ends = self.consumer.end_offsets(unchecked, timeout_ms=KAFKA_CALL_TIMEOUT_MS)
        for tp in unchecked:
            stored = self.writer.stored_position(tp)
            if stored + 1 > ends[tp]:
                raise StoreAheadError(
                    f"{tracking_name(tp)}: the event store has recorded offsets up to {stored}, "
                    f"but the topic ends at offset {ends[tp]}: it was deleted and created again, "
                    "or the store belongs to another Kafka cluster. Its messages would be "
                    "skipped as already stored. Stopping. Use a new topic name "
                    "(OPTOUT_TOPIC_INBOUND) or a new store (OPTOUT_DATABASE_URL)."
                )
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
                    tracking_name(tp),
                    stored,
                    next_offset,
                    stored + 1,
                )
                self.consumer.seek(tp, stored + 1)
                polled.pop(tp, None)  # they come again, after the earlier ones

    def _gap(self, tp: TopicPartition, first: int, last: int) -> None:
        """Offsets `first`..`last` were never stored and no longer exist in Kafka."""
        name = tracking_name(tp)
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
        if self.writer.record_gap(tp, first, last, accepted_by=f"--accept-gap ({user})"):
            self.consumer.seek(tp, last + 1)

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
        stored = self.writer.stored_position(tp)
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
        self.writer.save(tp, fresh)
        last = self.writer.stored_position(tp)
        try:
            self.consumer.commit_async({tp: OffsetAndMetadata(last + 1, "", -1)})
        except KafkaError as error:  # only a hint: the store holds the position
            log.debug("could not commit %s: %s", tracking_name(tp), describe(error))


def _transient(error: KafkaError) -> bool:
    """A broker that is away or busy, rather than a mistake that waiting will not mend."""
    return bool(error.retriable)  # timeouts, lost connections, leaders moving, ...
