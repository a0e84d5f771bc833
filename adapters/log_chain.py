"""The tamper-evident chain over the event log, written in the same transaction as the events.

Each insert transaction adds one chain row: the notification id of its first event, the digest of
each of its events in store order, and a head that links the row to the one before:

    digest(event) = SHA-256(originator id (16 bytes) | version (8) | len(topic) (4) | topic | state)
    head(row)     = SHA-256(head(previous row) | first notification id (8) | digests)

with 32 zero bytes before the first row. The event at position k of a row is notification
`first_id + k` (a transaction's events get consecutive ids: writers are serialised). A digest
leaves the id out, so `verify` can tell an event moved to another id (re-ordered) from an altered
one. Events stored before the chain existed are sealed once, when `init` creates the table: a
row per run of consecutive ids, marked `sealed` (`seal`).
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol
from uuid import UUID

from psycopg.sql import SQL

CHAIN = "optout_chain"
GENESIS = bytes(32)  # the head before the first row
DIGEST_SIZE = 32
SEAL_PAGE = 5000  # events read at a time while sealing

SQLITE_CREATE = (
    f"CREATE TABLE IF NOT EXISTS {CHAIN} (seq INTEGER PRIMARY KEY, first_id INTEGER NOT NULL, "
    "last_id INTEGER NOT NULL, digests BLOB NOT NULL, head BLOB NOT NULL, "
    "sealed INTEGER NOT NULL DEFAULT 0, recorded_at TEXT NOT NULL)"
)
POSTGRES_CREATE = (
    "CREATE TABLE IF NOT EXISTS {table} (seq bigserial PRIMARY KEY, first_id bigint NOT NULL, "
    "last_id bigint NOT NULL, digests bytea NOT NULL, head bytea NOT NULL, "
    "sealed boolean NOT NULL DEFAULT false, recorded_at timestamptz NOT NULL DEFAULT now())"
)
# The same digest and head as `event_digest` and `link`, computed by the server from the rows the
# transaction has just inserted (their ids are the sequence's last `n`): exact whatever order the
# insert gave them, and no round trip.
POSTGRES_APPEND = (
    "WITH last AS (SELECT currval(pg_get_serial_sequence(%s, 'notification_id')) AS id) "
    "INSERT INTO {chain} (first_id, last_id, digests, head) "
    "SELECT r.first_id, r.last_id, r.digests, sha256(coalesce("
    "(SELECT head FROM {chain} ORDER BY seq DESC LIMIT 1), decode(repeat('00', 32), 'hex')) "
    "|| int8send(r.first_id) || r.digests) "
    "FROM (SELECT min(notification_id) AS first_id, max(notification_id) AS last_id, "
    "string_agg(sha256(uuid_send(originator_id) || int8send(originator_version) "
    "|| int4send(octet_length(convert_to(topic, 'UTF8'))) || convert_to(topic, 'UTF8') || state), "
    "''::bytea ORDER BY notification_id) AS digests "
    "FROM {events}, last WHERE notification_id BETWEEN last.id - %s + 1 AND last.id) r"
)

# The same row from digests the writer computed before taking the lock (`event_digest`, in the
# order its COPY gave the rows their ids): only the head is computed under the lock.
POSTGRES_APPEND_DIGESTS = (
    "WITH last AS (SELECT currval(pg_get_serial_sequence(%(events)s, 'notification_id')) AS id) "
    "INSERT INTO {chain} (first_id, last_id, digests, head) "
    "SELECT last.id - %(count)s + 1, last.id, %(digests)s, sha256(coalesce("
    "(SELECT head FROM {chain} ORDER BY seq DESC LIMIT 1), decode(repeat('00', 32), 'hex')) "
    "|| int8send(last.id - %(count)s + 1) || %(digests)s) FROM last"
)


@dataclass(frozen=True)
class ChainRow:
    """One insert transaction's link: its first event's id and each of its events' digests."""

    seq: int
    first_id: int
    digests: bytes
    head: bytes
    sealed: bool
    recorded_at: str

    @property
    def count(self) -> int:
        return len(self.digests) // DIGEST_SIZE

    @property
    def last_id(self) -> int:
        return self.first_id + self.count - 1

    def digest_at(self, notification_id: int) -> bytes:
        start = (notification_id - self.first_id) * DIGEST_SIZE
        return self.digests[start : start + DIGEST_SIZE]


class StoredRow(Protocol):
    """What is hashed of a stored event (eventsourcing's StoredEvent and Notification both)."""

    @property
    def originator_id(self) -> UUID | str: ...
    @property
    def originator_version(self) -> int: ...
    @property
    def topic(self) -> str: ...
    @property
    def state(self) -> bytes: ...


def event_digest(event: StoredRow) -> bytes:
    originator = event.originator_id
    raw_id = originator.bytes if isinstance(originator, UUID) else UUID(originator).bytes
    topic = event.topic.encode()
    header = struct.pack(">16sqI", raw_id, event.originator_version, len(topic))
    state = event.state
    # A hand edit can leave SQLite holding the state as TEXT: hash its bytes all the same.
    raw_state = state.encode() if isinstance(state, str) else bytes(state)
    return hashlib.sha256(header + topic + raw_state).digest()


def link(previous: bytes, first_id: int, digests: bytes) -> bytes:
    return hashlib.sha256(previous + struct.pack(">q", first_id) + digests).digest()


def _now() -> str:
    return datetime.now(UTC).isoformat()


# SQLite: the writer holds the database's write lock from its first insert on, so reading the
# head inside the transaction is safe.


def sqlite_append(c: Any, stored_events: Sequence[StoredRow]) -> None:
    """Adds the chain row of events just inserted by this transaction (an executemany)."""
    c.execute("SELECT last_insert_rowid()")
    last_id = c.fetchone()[0]
    first_id = last_id - len(stored_events) + 1
    c.execute(f"SELECT head FROM {CHAIN} ORDER BY seq DESC LIMIT 1")  # noqa: S608
    row = c.fetchone()
    previous = bytes(row[0]) if row is not None else GENESIS
    digests = b"".join(map(event_digest, stored_events))
    c.execute(
        f"INSERT INTO {CHAIN} (first_id, last_id, digests, head, recorded_at) "  # noqa: S608
        "VALUES (?, ?, ?, ?, ?)",
        (first_id, last_id, digests, link(previous, first_id, digests), _now()),
    )


def sqlite_rows(c: Any, after_seq: int, limit: int) -> list[ChainRow]:
    c.execute(
        f"SELECT seq, first_id, digests, head, sealed, recorded_at FROM {CHAIN} "  # noqa: S608
        "WHERE seq > ? ORDER BY seq LIMIT ?",
        (after_seq, limit),
    )
    return [
        ChainRow(r[0], r[1], bytes(r[2]), bytes(r[3]), bool(r[4]), str(r[5])) for r in c.fetchall()
    ]


def sqlite_seal(c: Any, events_table: str) -> int:
    """Seals the events stored before the chain existed, if the chain is empty (the caller
    holds the write lock). Returns how many events were sealed."""
    c.execute(f"SELECT 1 FROM {CHAIN} LIMIT 1")  # noqa: S608
    if c.fetchone() is not None:
        return 0

    def pages() -> Iterator[Sequence[tuple[int, StoredRow]]]:
        after = 0
        while True:
            c.execute(
                f"SELECT rowid, originator_id, originator_version, topic, state "  # noqa: S608
                f"FROM {events_table} WHERE rowid > ? ORDER BY rowid LIMIT ?",
                (after, SEAL_PAGE),
            )
            page = [(r[0], _Row(r[1], r[2], r[3], bytes(r[4]))) for r in c.fetchall()]
            if not page:
                return
            yield page
            after = page[-1][0]

    sealed = 0
    for first_id, digests, head in seal_rows(pages()):
        c.execute(
            f"INSERT INTO {CHAIN} (first_id, last_id, digests, head, sealed, recorded_at) "  # noqa: S608
            "VALUES (?, ?, ?, ?, 1, ?)",
            (first_id, first_id + len(digests) // DIGEST_SIZE - 1, digests, head, _now()),
        )
        sealed += len(digests) // DIGEST_SIZE
    return sealed


@dataclass(frozen=True)
class _Row:
    originator_id: UUID | str
    originator_version: int
    topic: str
    state: bytes


def seal_rows(
    pages: Iterable[Sequence[tuple[int, StoredRow]]],
) -> Iterator[tuple[int, bytes, bytes]]:
    """(first id, digests, head) of a sealed row per run of consecutive ids (an id sequence has
    gaps where a transaction rolled back), linked from the genesis."""
    head, digests = GENESIS, bytearray()
    first_id: int | None = None
    previous_id = 0
    for page in pages:
        for notification_id, event in page:
            if first_id is not None and notification_id != previous_id + 1:
                head = link(head, first_id, bytes(digests))
                yield first_id, bytes(digests), head
                first_id = None
            if first_id is None:
                first_id, digests = notification_id, bytearray()
            digests += event_digest(event)
            previous_id = notification_id
    if first_id is not None:
        yield first_id, bytes(digests), link(head, first_id, bytes(digests))


# PostgreSQL: the writer holds the events table's EXCLUSIVE lock (taken before its insert), which
# every writer of events and of the chain takes, so the head read inside the transaction is the
# last one.


def postgres_append(curs: Any, chain: Any, events: Any, events_name: str, count: int) -> None:
    """Adds the chain row of the `count` events just inserted (same transaction, after them)."""
    curs.execute(
        SQL(POSTGRES_APPEND).format(chain=chain, events=events), [events_name, count], prepare=True
    )


def postgres_append_digests(
    curs: Any, chain: Any, events_name: str, count: int, digests: bytes
) -> None:
    """Adds the chain row of the `count` events just inserted, from their digests in id order."""
    curs.execute(
        SQL(POSTGRES_APPEND_DIGESTS).format(chain=chain),
        {"events": events_name, "count": count, "digests": digests},
        prepare=True,
    )


def postgres_rows(curs: Any, chain: Any, after_seq: int, limit: int) -> list[ChainRow]:
    curs.execute(
        SQL(
            "SELECT seq, first_id, digests, head, sealed, recorded_at FROM {} "
            "WHERE seq > %s ORDER BY seq LIMIT %s"
        ).format(chain),
        [after_seq, limit],
    )
    return [
        ChainRow(
            r["seq"],
            r["first_id"],
            bytes(r["digests"]),
            bytes(r["head"]),
            r["sealed"],
            r["recorded_at"].isoformat(),
        )
        for r in curs.fetchall()
    ]


def postgres_chained(curs: Any, chain: Any) -> bool:
    """Whether the chain has begun (then there is nothing to seal, ever again)."""
    curs.execute(SQL("SELECT 1 FROM {} LIMIT 1").format(chain))
    return curs.fetchone() is not None


def postgres_seal(curs: Any, chain: Any, events: Any) -> int:
    """Seals the events stored before the chain existed, if the chain is empty (the caller
    holds the events table's lock). Returns how many events were sealed."""
    if postgres_chained(curs, chain):
        return 0

    def pages() -> Iterator[Sequence[tuple[int, StoredRow]]]:
        after = 0
        while True:
            curs.execute(
                SQL(
                    "SELECT notification_id, originator_id, originator_version, topic, state "
                    "FROM {} WHERE notification_id > %s ORDER BY notification_id LIMIT %s"
                ).format(events),
                [after, SEAL_PAGE],
            )
            page = [
                (
                    r["notification_id"],
                    _Row(
                        r["originator_id"], r["originator_version"], r["topic"], bytes(r["state"])
                    ),
                )
                for r in curs.fetchall()
            ]
            if not page:
                return
            yield page
            after = page[-1][0]

    sealed = 0
    for first_id, digests, head in seal_rows(pages()):
        count = len(digests) // DIGEST_SIZE
        curs.execute(
            SQL(
                "INSERT INTO {} (first_id, last_id, digests, head, sealed) "
                "VALUES (%s, %s, %s, %s, true)"
            ).format(chain),
            [first_id, first_id + count - 1, digests, head],
        )
        sealed += count
    return sealed
