"""Dead letters: a rejected message keeps its original key, value and headers, plus why and where
it came from, so that nothing is lost and it can be re-driven once the cause is fixed."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

import msgspec
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from adapters import kafka
from adapters.settings import Settings

REASON = "x-dead-letter-reason"
CODE = "x-dead-letter-code"
ORIGIN_TOPIC = "x-origin-topic"
ORIGIN_PARTITION = "x-origin-partition"
ORIGIN_OFFSET = "x-origin-offset"
DEAD_LETTERED_AT = "x-dead-lettered-at"
REDRIVEN_FROM = "x-redriven-from"
ORIGINAL_SIZE = "x-original-size"
ORIGINAL_SHA256 = "x-original-sha256"
OUR_HEADERS = {
    REASON,
    CODE,
    ORIGIN_TOPIC,
    ORIGIN_PARTITION,
    ORIGIN_OFFSET,
    DEAD_LETTERED_AT,
    ORIGINAL_SIZE,
    ORIGINAL_SHA256,
}
# Values above this are kept as their first bytes plus size and hash (the original stays in the
# inbound topic at its origin offset): a dead letter must never be too big to send.
MAX_KEPT_VALUE_BYTES = 4 * 1024 * 1024

Headers = list[tuple[str, bytes]]


class DeadLetter(msgspec.Struct, frozen=True, kw_only=True):
    """One message in the dead-letter topic, as `dlq list` shows it."""

    id: str  # "<partition>:<offset>" in the dead-letter topic
    code: str
    reason: str
    origin_topic: str
    origin_partition: int
    origin_offset: int
    dead_lettered_at: str
    size: int | None  # bytes of the original value; None for a null value
    key: bytes | None
    value: bytes | None  # the original bytes, or their first MAX_KEPT_VALUE_BYTES if truncated
    headers: Headers  # the original headers, without ours
    truncated: bool = False


class DeadLetterSender:
    """Sends rejected messages to the dead-letter topic and makes sure each one arrived."""

    def __init__(self, settings: Settings, producer: KafkaProducer) -> None:
        self.topic = settings.topic_dead_letter
        self.producer = producer
        self.pending: list[Any] = []

    def send(self, record: Any, code: str, reason: str) -> None:
        value: bytes | None = record.value
        extra: Headers = []
        if value is not None and len(value) > MAX_KEPT_VALUE_BYTES:
            extra = [
                (ORIGINAL_SIZE, str(len(value)).encode()),
                (ORIGINAL_SHA256, hashlib.sha256(value).hexdigest().encode()),
            ]
            value = value[:MAX_KEPT_VALUE_BYTES]
        headers = headers_for(
            code, reason, record.topic, record.partition, record.offset, record.headers or []
        )
        self.pending.append(
            self.producer.send(self.topic, key=record.key, value=value, headers=headers + extra)
        )

    def confirm(self, timeout_s: float = 30.0) -> None:
        """Waits until every dead letter sent so far is stored; raises if any was not."""
        self.producer.flush(timeout=timeout_s)
        pending, self.pending = self.pending, []
        for future in pending:
            future.get(timeout=timeout_s)  # raises the broker's error for a failed send


def headers_for(
    code: str, reason: str, topic: str, partition: int, offset: int, original: Sequence[Any]
) -> Headers:
    """The original headers followed by ours (origin, code, reason, time)."""
    kept = [(name, bytes(value or b"")) for name, value in original if name not in OUR_HEADERS]
    return [
        *kept,
        (CODE, code.encode()),
        (REASON, reason.encode()),
        (ORIGIN_TOPIC, topic.encode()),
        (ORIGIN_PARTITION, str(partition).encode()),
        (ORIGIN_OFFSET, str(offset).encode()),
        (DEAD_LETTERED_AT, datetime.now(UTC).isoformat().encode()),
    ]


def _parse(record: Any) -> DeadLetter:
    ours = {
        name: bytes(value).decode("utf-8", "replace")
        for name, value in record.headers
        if name in OUR_HEADERS
    }
    return DeadLetter(
        id=f"{record.partition}:{record.offset}",
        code=ours.get(CODE, "unknown"),
        reason=ours.get(REASON, ""),
        origin_topic=ours.get(ORIGIN_TOPIC, ""),
        origin_partition=int(ours.get(ORIGIN_PARTITION, "-1")),
        origin_offset=int(ours.get(ORIGIN_OFFSET, "-1")),
        dead_lettered_at=ours.get(DEAD_LETTERED_AT, ""),
        size=int(ours[ORIGINAL_SIZE])
        if ORIGINAL_SIZE in ours
        else None
        if record.value is None
        else len(record.value),
        key=record.key,
        value=record.value,
        headers=[(name, bytes(value)) for name, value in record.headers if name not in OUR_HEADERS],
        truncated=ORIGINAL_SIZE in ours,
    )


def read(settings: Settings, timeout_s: float = 10.0) -> Iterator[DeadLetter]:
    """Every dead letter now in the topic, once per origin (a crash can re-send one), in order."""
    reader = KafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        client_id=kafka.CLIENT_ID,
        group_id=None,
        enable_auto_commit=False,
        max_partition_fetch_bytes=kafka.TOPIC_MAX_MESSAGE_BYTES,
        fetch_max_bytes=4 * kafka.TOPIC_MAX_MESSAGE_BYTES,
    )
    try:
        partitions = reader.partitions_for_topic(settings.topic_dead_letter) or set()
        assigned = [TopicPartition(settings.topic_dead_letter, p) for p in sorted(partitions)]
        if not assigned:
            return
        reader.assign(assigned)
        reader.seek_to_beginning(*assigned)
        ends = reader.end_offsets(assigned)
        seen: set[tuple[str, int, int]] = set()
        deadline = time.monotonic() + timeout_s
        while any(reader.position(tp) < ends[tp] for tp in assigned):
            if time.monotonic() > deadline:
                raise TimeoutError("the dead-letter topic could not be read to its end in time")
            for records in reader.poll(timeout_ms=500).values():
                for record in records:
                    letter = _parse(record)
                    origin = (letter.origin_topic, letter.origin_partition, letter.origin_offset)
                    if origin not in seen:
                        seen.add(origin)
                        yield letter
    finally:
        reader.close()


def redrive(settings: Settings, letters: Sequence[DeadLetter]) -> int:
    """Re-sends dead letters to the inbound topic with their original key, value and headers."""
    truncated = [letter.id for letter in letters if letter.truncated]
    if truncated:
        raise ValueError(
            f"dead letters {', '.join(truncated)} hold only the first bytes of their value; "
            "re-send those from their origin offset instead"
        )
    sender = kafka.producer(settings)
    try:
        for letter in letters:
            headers = [*letter.headers, (REDRIVEN_FROM, letter.id.encode())]
            sender.send(settings.topic_inbound, key=letter.key, value=letter.value, headers=headers)
        sender.flush(timeout=30)
    finally:
        sender.close()
    return len(letters)
