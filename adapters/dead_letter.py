"""Dead letters: a rejected message keeps its original key, value and headers, plus why and where
it came from, so that nothing is lost and it can be re-driven once the cause is fixed."""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import time
from collections.abc import Generator, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

import msgspec
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from adapters import kafka_clients
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


class Redrive(msgspec.Struct, frozen=True, kw_only=True):
    """A receipt: a dead letter was re-sent to the inbound topic (the latest time is kept)."""

    letter: str  # the dead letter's id, "<partition>:<offset>"
    at: str  # when, UTC, ISO 8601
    to: str  # where the re-sent message went, "<topic>:<partition>@<offset>"


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
    redriven: Redrive | None = None  # the latest redrive of this letter, if any


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


class AlreadyRedriven(ValueError):
    """Some chosen dead letters were re-driven before; the message names them."""

    def __init__(self, letters: Sequence[DeadLetter]) -> None:
        self.ids = [letter.id for letter in letters]
        named = ", ".join(
            f"{letter.id} (at {letter.redriven.at} to {letter.redriven.to})"
            for letter in letters
            if letter.redriven
        )
        super().__init__(f"already re-driven: {named}; pass --again to re-send them")


class Page(msgspec.Struct, frozen=True, kw_only=True):
    letters: list[DeadLetter]
    next: str | None  # the id to pass as `start` for the next page; None after the last


def parse_id(letter_id: str) -> tuple[int, int]:
    """(partition, offset) of an id "<partition>:<offset>"; ValueError if it is not one."""
    partition, _, offset = letter_id.partition(":")
    if not (partition.isdigit() and offset.isdigit()):
        raise ValueError(f"not a dead letter id (partition:offset): {letter_id!r}")
    return int(partition), int(offset)


def _reader(settings: Settings) -> KafkaConsumer:
    return KafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        client_id=kafka_clients.CLIENT_ID,
        group_id=None,
        enable_auto_commit=False,
        # An offset an operator has deleted resumes at the first one kept, not at the end.
        auto_offset_reset="earliest",
        allow_auto_create_topics=False,  # reading never makes a topic with the broker's defaults
        max_partition_fetch_bytes=kafka_clients.TOPIC_MAX_MESSAGE_BYTES,
        fetch_max_bytes=4 * kafka_clients.TOPIC_MAX_MESSAGE_BYTES,
    )


def _records(
    reader: KafkaConsumer, topic: str, start: tuple[int, int], stall_s: float
) -> Generator[Any, None, None]:
    """The topic's records from `start` (partition, offset) on, partition by partition, up to the
    ends it had when reading began. Gives up after `stall_s` seconds without progress, so a big
    topic takes as long as it needs and a silent broker does not hang the reader."""
    partitions = sorted(p for p in reader.partitions_for_topic(topic) or () if p >= start[0])
    assigned = [TopicPartition(topic, p) for p in partitions]
    if not assigned:
        return
    firsts, ends = reader.beginning_offsets(assigned), reader.end_offsets(assigned)
    for tp in assigned:
        begin = max(firsts[tp], start[1] if tp.partition == start[0] else 0)
        if begin >= ends[tp]:
            continue
        reader.assign([tp])
        reader.seek(tp, begin)
        progressed = time.monotonic()
        while reader.position(tp) < ends[tp]:
            batch = reader.poll(timeout_ms=500).get(tp, [])
            if batch:
                progressed = time.monotonic()
            elif time.monotonic() - progressed > stall_s:
                raise TimeoutError(
                    f"topic {topic} partition {tp.partition} stopped answering at offset "
                    f"{reader.position(tp)} of {ends[tp]} (OPTOUT_KAFKA_CONNECT_TIMEOUT: "
                    f"{stall_s:.0f}s without progress)"
                )
            for record in batch:
                if record.offset >= ends[tp]:
                    break
                yield record


def redrives(settings: Settings) -> dict[str, Redrive]:
    """The latest redrive receipt of each dead letter that was ever re-sent."""
    reader = _reader(settings)
    try:
        receipts = {}
        stall_s = settings.kafka_connect_timeout_s
        for record in _records(reader, settings.topic_redrives, (0, 0), stall_s):
            if record.value is not None:
                receipt = msgspec.json.decode(record.value, type=Redrive)
                receipts[receipt.letter] = receipt
        return receipts
    finally:
        reader.close()


def read(settings: Settings, start: str | None = None) -> Generator[DeadLetter, None, None]:
    """The dead letters now in the topic, from `start` (an id) on, ordered by partition then
    offset, once per origin (a crash can re-send one), each with its latest redrive receipt."""
    begin = parse_id(start) if start else (0, 0)
    receipts = redrives(settings)
    reader = _reader(settings)
    try:
        seen: set[tuple[str, int, int]] = set()
        stall_s = settings.kafka_connect_timeout_s
        for record in _records(reader, settings.topic_dead_letter, begin, stall_s):
            letter = _parse(record)
            origin = (letter.origin_topic, letter.origin_partition, letter.origin_offset)
            if origin not in seen:
                seen.add(origin)
                redriven = receipts.get(letter.id)
                yield msgspec.structs.replace(letter, redriven=redriven) if redriven else letter
    finally:
        reader.close()


def page(settings: Settings, start: str | None = None, limit: int = 100) -> Page:
    """Up to `limit` dead letters from `start` on; reads no further than the page needs."""
    with contextlib.closing(read(settings, start)) as letters:
        taken = list(itertools.islice(letters, limit + 1))
    more = taken[limit] if len(taken) > limit else None
    return Page(letters=taken[:limit], next=more.id if more else None)


def fetch(settings: Settings, ids: Iterable[str]) -> tuple[list[DeadLetter], list[str]]:
    """The dead letters with these ids (each read where it is), and the ids that name none."""
    receipts = redrives(settings)
    reader = _reader(settings)
    found: list[DeadLetter] = []
    unknown: list[str] = []
    try:
        for letter_id in dict.fromkeys(ids):
            partition, offset = parse_id(letter_id)
            at = _records(
                reader,
                settings.topic_dead_letter,
                (partition, offset),
                settings.kafka_connect_timeout_s,
            )
            with contextlib.closing(at):
                record = next(at, None)
            if record is None or (record.partition, record.offset) != (partition, offset):
                unknown.append(letter_id)
                continue
            letter = _parse(record)
            redriven = receipts.get(letter.id)
            found.append(msgspec.structs.replace(letter, redriven=redriven) if redriven else letter)
    finally:
        reader.close()
    return found, unknown


def redrive(settings: Settings, letters: Sequence[DeadLetter], *, again: bool = False) -> int:
    """Re-sends dead letters to the inbound topic with their original key, value and headers,
    then records a receipt for each. A letter re-driven before is refused unless `again`."""
    truncated = [letter.id for letter in letters if letter.truncated]
    if truncated:
        raise ValueError(
            f"dead letters {', '.join(truncated)} hold only the first bytes of their value; "
            "re-send those from their origin offset instead"
        )
    before = [letter for letter in letters if letter.redriven]
    if before and not again:
        raise AlreadyRedriven(before)
    reader = _reader(settings)
    try:
        receipts_topic_exists = bool(reader.partitions_for_topic(settings.topic_redrives))
    finally:
        reader.close()
    if not receipts_topic_exists:
        raise ValueError(
            f"topic {settings.topic_redrives} (redrive receipts) is missing; "
            "run `optout-sync init` first"
        )
    sender = kafka_clients.producer(settings)
    try:
        sent = [
            sender.send(
                settings.topic_inbound,
                key=letter.key,
                value=letter.value,
                headers=[*letter.headers, (REDRIVEN_FROM, letter.id.encode())],
            )
            for letter in letters
        ]
        sender.flush(timeout=30)
        at = datetime.now(UTC).isoformat(timespec="seconds")
        # Receipts only after every re-sent message is stored: a crash in between re-sends a
        # letter at worst, whose event_id the store then refuses, but never marks one unsent.
        receipts = []
        for letter, future in zip(letters, sent, strict=True):
            where = future.get(timeout=30)
            receipt = Redrive(
                letter=letter.id, at=at, to=f"{where.topic}:{where.partition}@{where.offset}"
            )
            receipts.append(
                sender.send(
                    settings.topic_redrives,
                    key=letter.id.encode(),
                    value=msgspec.json.encode(receipt),
                )
            )
        sender.flush(timeout=30)
        for future in receipts:
            future.get(timeout=30)
    finally:
        sender.close()
    return len(letters)
