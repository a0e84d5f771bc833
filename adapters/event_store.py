"""Persistence settings: turns the one database URL into the event store's environment.

SQLite is the embedded default; PostgreSQL is the production store. Tables are created once
(`create_tables`); long-running workers then start with CREATE_TABLE=n.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Collection, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit
from uuid import UUID

import msgspec
import psycopg
from eventsourcing.persistence import (
    DatetimeAsISO,
    InterfaceError,
    JSONTranscoder,
    OperationalError,
    StoredEvent,
    Tracking,
    UUIDAsHex,
)
from eventsourcing.postgres import PostgresProcessRecorder
from eventsourcing.sqlite import SQLiteCursor, SQLiteProcessRecorder
from eventsourcing.utils import retry
from psycopg.sql import SQL, Identifier

from adapters import log_chain, pg_copy
from adapters.pg_arrays import text_array, uuid_array
from adapters.settings import ConfigError, Settings
from domain.identity import AddressKeys

# Writers own their partitions, so a cached aggregate is current; a stale one is caught by the
# store's optimistic concurrency (IntegrityError) and the writer then forgets the slice's persons
# (and, on a rebalance, those of the partitions it lost).
WRITER_CACHE = {
    "AGGREGATE_CACHE_MAXSIZE": "200000",
    "AGGREGATE_CACHE_FASTFORWARD": "n",
    "DEEPCOPY_FROM_AGGREGATE_CACHE": "n",
}


class FastJSONTranscoder(JSONTranscoder):
    """eventsourcing's JSON format, byte for byte, encoded and decoded by msgspec (several times
    faster).

    Registered types (UUID, datetime, ...) are tagged as JSONTranscoder tags them; an event state
    with nested containers falls back to JSONTranscoder so nothing is ever tagged differently.
    Decoding untags bottom-up, as JSONTranscoder's object hook does; what msgspec refuses (the
    reference writes NaN as a bare token) is left to JSONTranscoder.
    """

    _encoder = msgspec.json.Encoder()
    _decoder = msgspec.json.Decoder()

    def encode(self, obj: Any) -> bytes:
        if type(obj) is not dict:
            return super().encode(obj)
        tagged = {}
        for name, value in obj.items():
            kind = type(value)
            if kind in _PLAIN:
                tagged[name] = value
            elif kind is UUID:  # the two tagged types every event has, without the lookup
                tagged[name] = {"_type_": "uuid_hex", "_data_": value.hex}
            elif kind is datetime:
                tagged[name] = {"_type_": "datetime_iso", "_data_": value.isoformat()}
            elif (transcoding := self.types.get(kind)) is not None:
                tagged[name] = {"_type_": transcoding.name, "_data_": transcoding.encode(value)}
            else:  # nested, or a type JSONTranscoder refuses: let it decide
                return super().encode(obj)
        return self._encoder.encode(tagged)

    def decode(self, data: bytes) -> Any:
        try:
            decoded = self._decoder.decode(data)
        except msgspec.DecodeError:
            return super().decode(data)
        if type(decoded) is not dict:
            return self._untagged(decoded)
        for name, value in decoded.items():  # an event's state: flat, some values tagged
            if type(value) in _CONTAINERS:
                decoded[name] = self._untagged(value)
        return decoded

    def _untagged(self, obj: Any) -> Any:
        kind = type(obj)
        if kind is dict:
            if len(obj) == 2 and "_type_" in obj and "_data_" in obj:
                data, tag = obj["_data_"], obj["_type_"]
                if type(data) in _CONTAINERS:
                    data = self._untagged(data)
                elif tag == "uuid_hex" and type(self.names.get(tag)) is UUIDAsHex:
                    return UUID(data)  # the two tags of every event, without the lookups
                elif tag == "datetime_iso" and type(self.names.get(tag)) is DatetimeAsISO:
                    return datetime.fromisoformat(data)
                return self._decode_obj({"_type_": tag, "_data_": data})
            return {name: self._untagged(value) for name, value in obj.items()}
        if kind is list:
            return [self._untagged(value) for value in obj]
        return obj


_CONTAINERS = (dict, list)


# A write waits this long at most for the event table's lock (taken by every writer), and a
# session idle inside a transaction this long is ended by the server, releasing its locks.
POSTGRES_LOCK_TIMEOUT_S = 5
POSTGRES_IDLE_IN_TRANSACTION_TIMEOUT_S = 10

# Exactly these encode alike in both (floats do not: msgspec writes NaN as null).
_PLAIN = (str, int, bool, type(None))
_SQLITE_MAX_PARAMETERS = 900  # below SQLite's historical limit of 999 bound parameters


def environment(
    database_url: str, *, create_table: bool = False, writer: bool = False
) -> dict[str, str]:
    """The eventsourcing environment for a `sqlite:///path` or `postgresql://` URL: the store's
    recorders (with the index beside the log) and, for a writer, its trusted aggregate cache."""
    url = urlsplit(database_url)
    env = {
        "CREATE_TABLE": "y" if create_table else "n",
        "TRANSCODER_TOPIC": f"{__name__}:{FastJSONTranscoder.__name__}",
        **(WRITER_CACHE if writer else {}),
    }
    if url.scheme == "sqlite":
        path = unquote(database_url[len("sqlite:///") :])
        if not path:
            raise ConfigError("OPTOUT_DATABASE_URL: a SQLite URL needs a file path")
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        env.update(
            PERSISTENCE_MODULE="eventsourcing.sqlite",
            PROCESS_RECORDER_TOPIC=f"{__name__}:{SQLiteStore.__name__}",
            SQLITE_DBNAME=path,
            SQLITE_LOCK_TIMEOUT="30",
        )
        return env
    if url.scheme in ("postgresql", "postgres"):
        if not url.hostname or not url.path.strip("/"):
            raise ConfigError(
                "OPTOUT_DATABASE_URL: a PostgreSQL URL is postgresql://user@host:port/db"
            )
        env.update(
            PERSISTENCE_MODULE="eventsourcing.postgres",
            PROCESS_RECORDER_TOPIC=f"{__name__}:{PostgresStore.__name__}",
            POSTGRES_DBNAME=unquote(url.path.strip("/")),
            POSTGRES_HOST=url.hostname,
            POSTGRES_PORT=str(url.port or 5432),
            POSTGRES_USER=unquote(url.username or "postgres"),
            POSTGRES_PASSWORD=unquote(url.password or ""),
            POSTGRES_CONNECT_TIMEOUT="10",
            POSTGRES_POOL_SIZE="2",
            POSTGRES_MAX_OVERFLOW="4",
            POSTGRES_LOCK_TIMEOUT=str(POSTGRES_LOCK_TIMEOUT_S),
            POSTGRES_IDLE_IN_TRANSACTION_SESSION_TIMEOUT=str(
                POSTGRES_IDLE_IN_TRANSACTION_TIMEOUT_S
            ),
        )
        return env
    raise ConfigError(f"OPTOUT_DATABASE_URL: unsupported scheme {url.scheme!r}")


ADDRESS_KEY_FILE = "address.key"


def _create_key_file(path: Path) -> None:
    """Writes a new key aside, on disk, then links it in whole: a process starting at the same
    moment reads either no file or the whole key, never a half-written one (the first link
    wins; the others read the winner's)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    aside = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    descriptor = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "w") as key_file:
            key_file.write(secrets.token_hex(32))
            key_file.flush()
            os.fsync(key_file.fileno())
        with contextlib.suppress(FileExistsError):  # another process was first
            os.link(aside, path)
    finally:
        aside.unlink(missing_ok=True)


def address_keys(settings: Settings) -> AddressKeys:
    """The keyed hash of addresses: OPTOUT_ADDRESS_KEY, else a key generated once into the
    state directory (first writer wins; every later process reads the same one)."""
    if settings.address_key is not None:
        return AddressKeys(settings.address_key.encode())
    path = settings.state_dir / ADDRESS_KEY_FILE
    if not path.exists():
        _create_key_file(path)
    try:
        secret = path.read_text().strip()
    except OSError as error:
        raise ConfigError(f"OPTOUT_ADDRESS_KEY: cannot read {path}: {error.strerror}") from None
    if len(secret) < 32:
        raise ConfigError(
            f"OPTOUT_ADDRESS_KEY: {path} holds no usable key (delete it only if "
            "nothing was recorded with it)"
        )
    return AddressKeys(secret.encode())


# The index beside the log (domain.application.Index): the same three tables on both stores.
CHANGE_IDS = "optout_change_ids"  # event id of every recorded change: one change, one record
CARRIERS = "optout_carriers"  # which person carries which address (keys only)
ADDRESSES = "optout_addresses"  # the clear address of each address key: erasable, and erased


def _chunks(items: Sequence[Any], size: int) -> list[Sequence[Any]]:
    return [items[start : start + size] for start in range(0, len(items), size)]


# Each connection's settings. Nearly every change inserts into four indexes of random keys
# (aggregate ids, change ids, address keys), so a commit dirties a page per insert: with the
# default 2 MiB cache those pages are read back through the OS, and a checkpoint every 1,000 WAL
# pages writes each hot page to the database again and again. 256 MiB at most (filled only as
# pages are read) and a checkpoint every 20,000 pages (80 MiB; the WAL file is cut back to 64 MiB
# after it) took 7-13% off an ingest's CPU per change (docs/performance.md).
SQLITE_PRAGMAS = (
    "PRAGMA cache_size = -262144",
    "PRAGMA wal_autocheckpoint = 20000",
    "PRAGMA journal_size_limit = 67108864",
)


class SQLiteStore(SQLiteProcessRecorder):
    """The event log on SQLite, with its index written in the same transaction."""

    def __init__(self, datastore: Any, **kwargs: Any) -> None:
        super().__init__(datastore, **kwargs)
        pool = datastore.pool
        create = pool._create_connection

        def tuned() -> Any:
            connection = create()
            for pragma in SQLITE_PRAGMAS:
                connection._sqlite_conn.execute(pragma)
            return connection

        pool._create_connection = tuned

    def construct_create_table_statements(self) -> list[str]:
        return [
            *super().construct_create_table_statements(),
            f"CREATE TABLE IF NOT EXISTS {CHANGE_IDS} (event_id BLOB PRIMARY KEY) WITHOUT ROWID",
            f"CREATE TABLE IF NOT EXISTS {CARRIERS} (mailbox TEXT, person_key TEXT, "
            "PRIMARY KEY (mailbox, person_key)) WITHOUT ROWID",
            f"CREATE TABLE IF NOT EXISTS {ADDRESSES} (mailbox TEXT PRIMARY KEY, email TEXT, "
            "erased_at TEXT)",
            log_chain.SQLITE_CREATE,
        ]

    def create_table(self) -> None:
        super().create_table()
        self.seal_unchained()

    def seal_unchained(self) -> int:
        """Seals the events stored before the chain existed (once: while the chain is empty)."""
        with self.datastore.transaction(commit=False) as c:
            c.execute(f"SELECT 1 FROM {log_chain.CHAIN} LIMIT 1")  # noqa: S608
            if c.fetchone() is not None:
                return 0  # every start creates the tables: no writer waits on it
        with self.datastore.get_connection(commit=True) as connection:
            c = connection.cursor()
            # The write lock first: nobody writes between reading the log and sealing it.
            c.execute("BEGIN IMMEDIATE")
            try:
                sealed = log_chain.sqlite_seal(c, self.events_table_name)
            except BaseException:
                connection.rollback()
                raise
            connection.commit()
        return sealed

    def chain_rows(self, after_seq: int, limit: int) -> list[log_chain.ChainRow]:
        with self.datastore.transaction(commit=False) as c:
            return log_chain.sqlite_rows(c, after_seq, limit)

    @property
    def snapshots_table_name(self) -> str:
        return self.events_table_name.replace("events", "snapshots")

    def _insert_events(
        self, c: SQLiteCursor, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        # The library's rows, in one executemany instead of an execute per event (it reads each
        # lastrowid for notification ids that nothing here reads): the same rows, in the same order.
        c.executemany(
            self.insert_events_statement,
            [
                (_text_id(event.originator_id), event.originator_version, event.topic, event.state)
                for event in stored_events
            ],
        )
        if stored_events:  # before any other insert: it reads last_insert_rowid()
            log_chain.sqlite_append(c, stored_events)
        tracking: Tracking | None = kwargs.get("tracking")
        if tracking is not None:
            self._insert_tracking(c, tracking)
        change_ids: Sequence[UUID] = kwargs.get("change_ids", ())
        if change_ids:
            c.executemany(
                f"INSERT INTO {CHANGE_IDS} VALUES (?)",  # noqa: S608
                [(i.bytes,) for i in change_ids],
            )
        carriers: Sequence[tuple[str, str]] = kwargs.get("carriers", ())
        if carriers:
            c.executemany(f"INSERT OR IGNORE INTO {CARRIERS} VALUES (?, ?)", carriers)  # noqa: S608
        addresses: dict[str, str] = kwargs.get("addresses", {})
        if addresses:
            # An erased address stays erased: its row keeps NULL.
            c.executemany(
                f"INSERT OR IGNORE INTO {ADDRESSES} (mailbox, email) VALUES (?, ?)",  # noqa: S608
                list(addresses.items()),
            )
        return None

    def recorded_changes(self, event_ids: Collection[UUID]) -> set[UUID]:
        found: set[UUID] = set()
        with self.datastore.transaction(commit=False) as c:
            for chunk in _chunks([i.bytes for i in event_ids], _SQLITE_MAX_PARAMETERS):
                c.execute(
                    f"SELECT event_id FROM {CHANGE_IDS} "  # noqa: S608
                    f"WHERE event_id IN ({','.join('?' * len(chunk))})",
                    chunk,
                )
                found.update(UUID(bytes=row[0]) for row in c.fetchall())
        return found

    def histories(self, ids: Collection[UUID]) -> dict[UUID, list[StoredEvent]]:
        found: dict[UUID, list[StoredEvent]] = {}
        asked = {i.hex: i for i in ids}  # the ids as stored: no UUID made per row (a third)

        def add(rows: list[Any]) -> None:
            for originator_id, version, topic, state in rows:
                person_id = asked.get(originator_id) or UUID(originator_id)
                event = StoredEvent(person_id, version, topic, bytes(state))
                found.setdefault(person_id, []).append(event)

        with self.datastore.transaction(commit=False) as c:
            for chunk in _chunks(list(asked), _SQLITE_MAX_PARAMETERS):
                # Which are stored at all, from the events' index alone: most persons a batch
                # names are new, and this is their only lookup.
                c.execute(
                    f"SELECT DISTINCT originator_id FROM {self.events_table_name} "  # noqa: S608
                    f"WHERE originator_id IN ({','.join('?' * len(chunk))})",
                    chunk,
                )
                stored = [row[0] for row in c.fetchall()]
                if not stored:
                    continue
                marks = ",".join("?" * len(stored))
                c.execute(
                    f"SELECT originator_id, max(originator_version) AS originator_version, "  # noqa: S608
                    f"topic, state FROM {self.snapshots_table_name} "
                    f"WHERE originator_id IN ({marks}) GROUP BY originator_id",
                    stored,
                )
                after = dict.fromkeys(stored, 0)
                snapshots = c.fetchall()
                for row in snapshots:
                    after[row["originator_id"]] = row["originator_version"]
                add(snapshots)
                # Persons without a snapshot (most): every event, by the primary key.
                whole = [i for i, version in after.items() if version == 0]
                if whole:
                    c.execute(
                        f"SELECT originator_id, originator_version, topic, state "  # noqa: S608
                        f"FROM {self.events_table_name} "
                        f"WHERE originator_id IN ({','.join('?' * len(whole))}) "
                        f"ORDER BY originator_id, originator_version",
                        whole,
                    )
                    add(c.fetchall())
                for originator_id, version in after.items():
                    if version == 0:
                        continue
                    c.execute(
                        f"SELECT originator_id, originator_version, topic, state "  # noqa: S608
                        f"FROM {self.events_table_name} "
                        f"WHERE originator_id = ? AND originator_version > ? "
                        f"ORDER BY originator_version",
                        (originator_id, version),
                    )
                    add(c.fetchall())
        return found

    def address(self, mailbox: str) -> str | None:
        with self.datastore.transaction(commit=False) as c:
            c.execute(f"SELECT email FROM {ADDRESSES} WHERE mailbox = ?", (mailbox,))  # noqa: S608
            row = c.fetchone()
        return None if row is None else row[0]

    def carriers(self, mailbox: str) -> list[str]:
        with self.datastore.transaction(commit=False) as c:
            c.execute(
                f"SELECT person_key FROM {CARRIERS} WHERE mailbox = ? ORDER BY person_key",  # noqa: S608
                (mailbox,),
            )
            return [row[0] for row in c.fetchall()]

    def erase_address(self, mailbox: str) -> bool:
        """Overwrites the address (secure_delete zeroes the freed bytes), then checkpoints the
        write-ahead log so no older copy of the page survives in it."""
        with self.datastore.get_connection(commit=True) as connection:
            connection.cursor().execute("PRAGMA secure_delete = ON")
            with connection.transaction(commit=True) as c:
                c.execute(f"SELECT email FROM {ADDRESSES} WHERE mailbox = ?", (mailbox,))  # noqa: S608
                row = c.fetchone()
                c.execute(
                    f"INSERT INTO {ADDRESSES} (mailbox, email, erased_at) VALUES (?, NULL, ?) "  # noqa: S608
                    f"ON CONFLICT (mailbox) DO UPDATE SET email = NULL, "
                    f"erased_at = coalesce({ADDRESSES}.erased_at, excluded.erased_at)",
                    (mailbox, datetime.now().astimezone().isoformat()),
                )
            connection.cursor().execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return row is not None and row[0] is not None


def _text_id(originator_id: UUID | str) -> str:
    return originator_id.hex if isinstance(originator_id, UUID) else originator_id


def _stored(row: Any) -> StoredEvent:
    originator_id = row["originator_id"]
    if not isinstance(originator_id, UUID):
        originator_id = UUID(originator_id)
    return StoredEvent(originator_id, row["originator_version"], row["topic"], bytes(row["state"]))


class PostgresStore(PostgresProcessRecorder):
    """The event log on PostgreSQL, with its index written in the same transaction."""

    def __init__(self, datastore: Any, **kwargs: Any) -> None:
        super().__init__(datastore, **kwargs)
        self.sql_create_statements.extend(
            SQL(statement).format(table=self._table(name))
            for name, statement in (
                (CHANGE_IDS, "CREATE TABLE IF NOT EXISTS {table} (event_id uuid PRIMARY KEY)"),
                (
                    CARRIERS,
                    "CREATE TABLE IF NOT EXISTS {table} (mailbox text, person_key text, "
                    "PRIMARY KEY (mailbox, person_key))",
                ),
                (
                    ADDRESSES,
                    "CREATE TABLE IF NOT EXISTS {table} (mailbox text PRIMARY KEY, email text, "
                    "erased_at timestamptz)",
                ),
                (log_chain.CHAIN, log_chain.POSTGRES_CREATE),
            )
        )
        self._events_name = f'"{self.datastore.schema}"."{self.events_table_name}"'
        self._copy_events = pg_copy.copy_statement(
            self._table(self.events_table_name), pg_copy.EVENT_COLUMNS
        )
        self._copy_change_ids = pg_copy.copy_statement(self._table(CHANGE_IDS), "event_id")
        # COPY needs the uuid originator ids this store is made with (the library's default).
        self.copies = (
            self.datastore.originator_id_type == "uuid" and not self.datastore.enable_db_functions
        )

    def create_table(self) -> None:
        super().create_table()
        self.seal_unchained()

    def seal_unchained(self) -> int:
        """Seals the events stored before the chain existed (once: while the chain is empty)."""
        chain = self._table(log_chain.CHAIN)
        with self.datastore.transaction(commit=False) as curs:
            if log_chain.postgres_chained(curs, chain):
                return 0  # every start creates the tables: no writer waits on it
        with self.datastore.transaction(commit=True) as curs:
            self._lock_table(curs)
            return log_chain.postgres_seal(curs, chain, self._table(self.events_table_name))

    def chain_rows(self, after_seq: int, limit: int) -> list[log_chain.ChainRow]:
        with self.datastore.transaction(commit=False) as curs:
            return log_chain.postgres_rows(curs, self._table(log_chain.CHAIN), after_seq, limit)

    @retry((InterfaceError, OperationalError), max_attempts=10, wait=0.2)
    def insert_events(
        self, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        """The library's transaction, in its order (tracking fence, index rows, the table's lock,
        NOTIFY, the events, the chain link), with the events sent by binary COPY and the chain's
        digests computed before the lock is taken (only the link's head is computed under it).
        psycopg's errors become eventsourcing's as in the library (`datastore.get_connection`): a
        duplicate `(originator_id, originator_version)` or change id is an IntegrityError, and
        nothing is written.

        Returns no notification ids: nothing here reads them (ChangeRecorder is no Leader, and
        `process_event` drops its recordings), and the library's would cost a Recording and a
        Notification per event. The chain row holds the transaction's first and last id.
        """
        if not self.copies:
            return super().insert_events(stored_events, **kwargs)
        with self.datastore.get_connection() as conn:
            # Built before the transaction begins: nothing of it while the table is locked.
            payload, digests = None, b""
            if stored_events:
                payload = pg_copy.events_payload(stored_events, conn.info.encoding)
                digests = b"".join(map(log_chain.event_digest, stored_events))
            change_ids: Sequence[UUID] = kwargs.pop("change_ids", ())
            with conn.transaction():
                if change_ids:  # by COPY too (a third of the INSERT's time), before the lock
                    with conn.cursor() as curs:
                        pg_copy.copy(curs, self._copy_change_ids, pg_copy.uuids_payload(change_ids))
                with conn.pipeline(), conn.cursor() as curs:
                    self._insert_events(curs, stored_events, **kwargs)
                    if payload is not None:
                        self._lock_table(curs)
                        self._notify_channel(curs)
                if payload is not None:  # COPY cannot run in a pipeline
                    with conn.cursor() as curs:
                        # Ids in row order: nextval per row as COPY reads it, under the lock.
                        pg_copy.copy(curs, self._copy_events, payload)
                        log_chain.postgres_append_digests(
                            curs,
                            self._table(log_chain.CHAIN),
                            self._events_name,
                            len(stored_events),
                            digests,
                        )
        return None

    def _append_link(self, curs: psycopg.Cursor[Any], count: int) -> None:
        log_chain.postgres_append(
            curs,
            self._table(log_chain.CHAIN),
            self._table(self.events_table_name),
            self._events_name,
            count,
        )

    def _insert_stored_events(
        self, curs: psycopg.Cursor[Any], stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> None:
        # The library's path (a store not made for COPY): its insert, then the chain link.
        super()._insert_stored_events(curs, stored_events, **kwargs)  # takes the table's lock
        if stored_events:
            # Its own cursor: the insert's cursor still holds the returned notification ids.
            with curs.connection.cursor() as chain_curs:
                self._append_link(chain_curs, len(stored_events))

    def _table(self, name: str) -> SQL | Any:
        return SQL("{}.{}").format(Identifier(self.datastore.schema), Identifier(name))

    def _insert_events(
        self, curs: psycopg.Cursor[Any], stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> None:
        super()._insert_events(curs, stored_events, **kwargs)
        change_ids: Sequence[UUID] = kwargs.get("change_ids", ())
        if change_ids:
            curs.execute(
                SQL("INSERT INTO {} SELECT unnest(%s::uuid[])").format(self._table(CHANGE_IDS)),
                [uuid_array(change_ids)],
            )
        carriers: Sequence[tuple[str, str]] = kwargs.get("carriers", ())
        if carriers:
            curs.execute(
                SQL(
                    "INSERT INTO {} SELECT * FROM unnest(%s::text[], %s::text[]) "
                    "ON CONFLICT DO NOTHING"
                ).format(self._table(CARRIERS)),
                [text_array(m for m, _ in carriers), text_array(p for _, p in carriers)],
            )
        addresses: dict[str, str] = kwargs.get("addresses", {})
        if addresses:
            curs.execute(
                SQL(
                    "INSERT INTO {} (mailbox, email) SELECT * FROM unnest(%s::text[], %s::text[]) "
                    "ON CONFLICT DO NOTHING"
                ).format(self._table(ADDRESSES)),
                [text_array(addresses), text_array(addresses.values())],
            )

    def recorded_changes(self, event_ids: Collection[UUID]) -> set[UUID]:
        with self.datastore.transaction(commit=False) as curs:
            curs.execute(
                SQL("SELECT event_id FROM {} WHERE event_id = ANY(%s)").format(
                    self._table(CHANGE_IDS)
                ),
                [uuid_array(event_ids)],
            )
            return {row["event_id"] for row in curs.fetchall()}

    def histories(self, ids: Collection[UUID]) -> dict[UUID, list[StoredEvent]]:
        snapshots = self.events_table_name.replace("events", "snapshots")
        found: dict[UUID, list[StoredEvent]] = {}
        with self.datastore.transaction(commit=False) as curs:
            # Which are stored at all, from the events' index alone: most persons a batch names
            # are new, and this is their only lookup.
            curs.execute(
                SQL("SELECT DISTINCT originator_id FROM {} WHERE originator_id = ANY(%s)").format(
                    self._table(self.events_table_name)
                ),
                [uuid_array(ids)],
            )
            id_list = [row["originator_id"] for row in curs.fetchall()]
            if not id_list:
                return found
            curs.execute(
                SQL(
                    "SELECT DISTINCT ON (originator_id) originator_id, originator_version, "
                    "topic, state FROM {} WHERE originator_id = ANY(%s) "
                    "ORDER BY originator_id, originator_version DESC"
                ).format(self._table(snapshots)),
                [uuid_array(id_list)],
            )
            after = dict.fromkeys(id_list, 0)
            for row in curs.fetchall():
                after[row["originator_id"]] = row["originator_version"]
                found[row["originator_id"]] = [_stored(row)]
            # Persons without a snapshot (most): every event, by the primary key. (A join with
            # an unnest of the ids was planned as a merge join over the whole index: a read
            # that grew with the log, 37 ms a batch at 55,000 events.)
            whole = [person_id for person_id, version in after.items() if version == 0]
            if whole:
                curs.execute(
                    SQL(
                        "SELECT originator_id, originator_version, topic, state FROM {} "
                        "WHERE originator_id = ANY(%s) ORDER BY originator_id, originator_version"
                    ).format(self._table(self.events_table_name)),
                    [uuid_array(whole)],
                )
                for row in curs.fetchall():
                    found.setdefault(row["originator_id"], []).append(_stored(row))
            for person_id, version in after.items():
                if version == 0:
                    continue
                curs.execute(
                    SQL(
                        "SELECT originator_id, originator_version, topic, state FROM {} "
                        "WHERE originator_id = %s AND originator_version > %s "
                        "ORDER BY originator_version"
                    ).format(self._table(self.events_table_name)),
                    [person_id, version],
                )
                for row in curs.fetchall():
                    found.setdefault(row["originator_id"], []).append(_stored(row))
        return found

    def address(self, mailbox: str) -> str | None:
        with self.datastore.transaction(commit=False) as curs:
            curs.execute(
                SQL("SELECT email FROM {} WHERE mailbox = %s").format(self._table(ADDRESSES)),
                [mailbox],
            )
            row = curs.fetchone()
        return None if row is None else row["email"]

    def carriers(self, mailbox: str) -> list[str]:
        with self.datastore.transaction(commit=False) as curs:
            curs.execute(
                SQL("SELECT person_key FROM {} WHERE mailbox = %s ORDER BY person_key").format(
                    self._table(CARRIERS)
                ),
                [mailbox],
            )
            return [row["person_key"] for row in curs.fetchall()]

    def erase_address(self, mailbox: str) -> bool:
        """Sets the address to NULL, then vacuums the table so the old row version is gone
        from every copy PostgreSQL keeps for readers (a dump never holds it)."""
        with self.datastore.transaction(commit=True) as curs:
            curs.execute(
                SQL("SELECT email FROM {} WHERE mailbox = %s FOR UPDATE").format(
                    self._table(ADDRESSES)
                ),
                [mailbox],
            )
            row = curs.fetchone()
            curs.execute(
                SQL(
                    "INSERT INTO {table} (mailbox, email, erased_at) VALUES (%s, NULL, now()) "
                    "ON CONFLICT (mailbox) DO UPDATE SET email = NULL, "
                    "erased_at = coalesce({table}.erased_at, excluded.erased_at)"
                ).format(table=self._table(ADDRESSES)),
                [mailbox],
            )
        with self.datastore.get_connection() as connection:
            connection.autocommit = True
            try:
                connection.execute(SQL("VACUUM {}").format(self._table(ADDRESSES)))
            finally:
                connection.autocommit = False
        return row is not None and row["email"] is not None
