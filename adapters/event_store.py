"""Persistence settings: turns the one database URL into the event store's environment.

SQLite is the embedded default; PostgreSQL is the production store. Tables are created once
(`create_tables`); long-running workers then start with CREATE_TABLE=n.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit
from uuid import UUID

import msgspec
from eventsourcing.persistence import JSONTranscoder, StoredEvent
from eventsourcing.postgres import PostgresAggregateRecorder
from eventsourcing.sqlite import SQLiteAggregateRecorder
from psycopg.sql import SQL, Identifier

from adapters.settings import ConfigError, Settings
from domain.application import OptOutLog, StoredEventsOf

# Writers own their partitions, so a cached aggregate is current; a stale one is caught by the
# store's optimistic concurrency (IntegrityError) and the writer then forgets the slice's persons
# (and, on a rebalance, those of the partitions it lost).
WRITER_CACHE = {
    "AGGREGATE_CACHE_MAXSIZE": "200000",
    "AGGREGATE_CACHE_FASTFORWARD": "n",
    "DEEPCOPY_FROM_AGGREGATE_CACHE": "n",
}


class FastJSONTranscoder(JSONTranscoder):
    """eventsourcing's JSON format, byte for byte, encoded by msgspec (several times faster).

    Registered types (UUID, datetime, ...) are tagged as JSONTranscoder tags them; an event state
    with nested containers falls back to JSONTranscoder so nothing is ever tagged differently.
    """

    _encoder = msgspec.json.Encoder()

    def encode(self, obj: Any) -> bytes:
        if not isinstance(obj, dict):
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


# A write waits this long at most for the event table's lock (taken by every writer), and a
# session idle inside a transaction this long is ended by the server, releasing its locks.
POSTGRES_LOCK_TIMEOUT_S = 5
POSTGRES_IDLE_IN_TRANSACTION_TIMEOUT_S = 10

# Exactly these encode alike in both (floats do not: msgspec writes NaN as null).
_PLAIN = (str, int, bool, type(None))
_SQLITE_MAX_PARAMETERS = 900  # below SQLite's historical limit of 999 bound parameters


def environment(database_url: str, *, create_table: bool = False) -> dict[str, str]:
    """The eventsourcing environment for a `sqlite:///path` or `postgresql://` URL."""
    url = urlsplit(database_url)
    env = {
        "CREATE_TABLE": "y" if create_table else "n",
        "TRANSCODER_TOPIC": f"{__name__}:{FastJSONTranscoder.__name__}",
    }
    if url.scheme == "sqlite":
        path = unquote(database_url[len("sqlite:///") :])
        if not path:
            raise ConfigError("OPTOUT_DATABASE_URL: a SQLite URL needs a file path")
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        env.update(
            PERSISTENCE_MODULE="eventsourcing.sqlite",
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


def create_tables(database_url: str) -> None:
    """Creates the event store's tables if missing (idempotent)."""
    OptOutLog(env=environment(database_url, create_table=True)).close()


def open_log(settings: Settings, *, writer: bool = False) -> OptOutLog:
    """The event log on the configured store; writers keep a trusted aggregate cache and load
    each batch's persons in one read."""
    env = environment(settings.database_url)
    if writer:
        env.update(WRITER_CACHE)
    log = OptOutLog(env=env)
    if writer:
        log.stored_events_of = stored_events_reader(log.recorder)
    return log


def stored_events_reader(recorder: object) -> StoredEventsOf | None:
    """Reads the stored events of many aggregates in one query (eventsourcing reads one)."""
    if isinstance(recorder, SQLiteAggregateRecorder):
        return partial(_sqlite_events_of, recorder)
    if isinstance(recorder, PostgresAggregateRecorder):
        return partial(_postgres_events_of, recorder)
    return None


def _sqlite_events_of(
    recorder: SQLiteAggregateRecorder, ids: Collection[UUID]
) -> dict[UUID, list[StoredEvent]]:
    found: dict[UUID, list[StoredEvent]] = {}
    id_list = list(ids)
    with recorder.datastore.transaction(commit=False) as cursor:
        for start in range(0, len(id_list), _SQLITE_MAX_PARAMETERS):
            chunk = [i.hex for i in id_list[start : start + _SQLITE_MAX_PARAMETERS]]
            cursor.execute(
                f"SELECT originator_id, originator_version, topic, state "  # noqa: S608
                f"FROM {recorder.events_table_name} "
                f"WHERE originator_id IN ({','.join('?' * len(chunk))}) "
                f"ORDER BY originator_id, originator_version",
                chunk,
            )
            for row in cursor.fetchall():
                originator_id = UUID(row["originator_id"])
                found.setdefault(originator_id, []).append(
                    StoredEvent(
                        originator_id, row["originator_version"], row["topic"], row["state"]
                    )
                )
    return found


def _postgres_events_of(
    recorder: PostgresAggregateRecorder, ids: Collection[UUID]
) -> dict[UUID, list[StoredEvent]]:
    statement = SQL(
        "SELECT originator_id, originator_version, topic, state FROM {schema}.{table} "
        "WHERE originator_id = ANY(%s) ORDER BY originator_id, originator_version"
    ).format(
        schema=Identifier(recorder.datastore.schema),
        table=Identifier(recorder.events_table_name),
    )
    found: dict[UUID, list[StoredEvent]] = {}
    with recorder.datastore.get_connection() as connection, connection.cursor() as cursor:
        cursor.execute(statement, [list(ids)])
        for row in cursor.fetchall():
            found.setdefault(row["originator_id"], []).append(
                StoredEvent(
                    row["originator_id"],
                    row["originator_version"],
                    row["topic"],
                    bytes(row["state"]),
                )
            )
    return found
