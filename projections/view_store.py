"""Where read models live (the read models' own tracking recorders, as eventsourcing's
`examples/ftsprojection` keeps its view beside its projection): tables beside the event log, in the same database (SQLite or
PostgreSQL), each generation in its own tables (`rm_<table>_g<n>`) behind a view (`rm_<table>`)
that a switch re-points in one transaction. A generation's position is a row of eventsourcing's
tracking table (`view:<model>:g<n>`), written in the same transaction as its rows.
"""

from __future__ import annotations

import sqlite3
import zlib
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from eventsourcing.persistence import PersistenceError, ProcessRecorder, Tracking
from eventsourcing.postgres import PostgresProcessRecorder
from eventsourcing.sqlite import SQLiteProcessRecorder

from projections.views import (
    PositionMoved,
    ReadModel,
    Row,
    Rows,
    Select,
    Table,
    Writes,
    view,
)

LIVE = "rm_live"  # which generation of each model the views show
_SQLITE_CHUNK = 900  # bound parameters per statement, below SQLite's historical limit
# A writer's page cache (KiB): a rebuild's page updates rows of random keys all over tables
# that outgrow SQLite's default 2 MB at a million events, and rewrites each B-tree page it
# cannot keep. Memory is taken only as pages are read.
_SQLITE_CACHE = "PRAGMA cache_size = -262144"
Columns = tuple[tuple[str, str], ...]  # (name, kind) of a table's columns, in its order
_COPY_FROM = 100  # rows of a table in one write from which PostgreSQL gets them by COPY
# Python's sqlite3 binds a None through the adapter protocol (a registry miss, then attribute
# lookups: 0.3 µs, as slow as four texts); with an adapter registered for None, a C callable that
# gives None back, it is bound as NULL at once. Process-wide, and only faster: None is NULL still.
_NONE: dict[None, None] = {}
sqlite3.register_adapter(type(None), _NONE.get)


def physical(table: Table | str, generation: int) -> str:
    return f"rm_{table if isinstance(table, str) else table.name}_g{generation}"


def tracking_name(model: str, generation: int) -> str:
    return f"view:{model}:g{generation}"


def open_view_store(recorder: ProcessRecorder) -> SQLiteViewStore | PostgresViewStore:
    if isinstance(recorder, SQLiteProcessRecorder):
        return SQLiteViewStore(recorder)
    if isinstance(recorder, PostgresProcessRecorder):
        return PostgresViewStore(recorder)
    raise TypeError(f"no read-model store for {type(recorder).__name__}")


class _SQLStore:
    """What both databases share; the subclasses give the connection, placeholders and types."""

    integer = "INTEGER"
    tracking_table = "tracking"

    def _transaction(self, *, write: bool) -> Any:
        raise NotImplementedError

    def _sql(self, sql: str) -> str:
        return sql

    def _fetch(self, cursor: Any) -> list[Row]:
        return [tuple(row) for row in cursor.fetchall()]

    def _lock(self, cursor: Any, name: str) -> None:
        """Serialises writers of one generation (SQLite: BEGIN IMMEDIATE already does)."""

    def _insert_tracking(self, cursor: Any, tracking: Tracking) -> None:
        raise NotImplementedError

    def _ensure_live_table(self, cursor: Any) -> None:
        cursor.execute(
            f"CREATE TABLE IF NOT EXISTS {LIVE} (model TEXT PRIMARY KEY, generation {self.integer})"
        )

    def live_generation(self, model: str) -> int | None:
        try:
            with self._transaction(write=False) as cursor:
                cursor.execute(
                    self._sql(f"SELECT generation FROM {LIVE} WHERE model = ?"), (model,)
                )
                found = self._fetch(cursor)
        except (sqlite3.OperationalError, psycopg.errors.UndefinedTable, PersistenceError) as error:
            if "no such table" in str(error) or "does not exist" in str(error):
                return None
            raise
        return int(found[0][0]) if found else None

    def generations(self, model: ReadModel) -> list[int]:
        first = physical(model.tables[0], 0).removesuffix("0")
        with self._transaction(write=False) as cursor:
            cursor.execute(*self._table_names(first))
            names = [str(row[0]) for row in self._fetch(cursor)]
        return sorted(int(name[len(first) :]) for name in names if name[len(first) :].isdigit())

    def _table_names(self, prefix: str) -> tuple[str, Row]:
        raise NotImplementedError

    def create(self, model: ReadModel, generation: int, *, indexed: bool = True) -> None:
        with self._transaction(write=True) as cursor:
            self._ensure_live_table(cursor)
            for table in model.tables:
                name = physical(table, generation)
                columns = ", ".join(
                    f"{column} {self.integer if kind == 'integer' else 'TEXT'}"
                    for column, kind in table.columns
                )
                cursor.execute(
                    f"CREATE TABLE IF NOT EXISTS {name} ({columns}, "
                    f"PRIMARY KEY ({', '.join(table.key)}))"
                )
                self._index(
                    cursor, table, generation, only=None if indexed else table.write_indexes
                )

    def index(self, model: ReadModel, generation: int) -> None:
        with self._transaction(write=True) as cursor:
            self._before_indexing(cursor)
            for table in model.tables:
                self._index(cursor, table, generation)

    def _before_indexing(self, cursor: Any) -> None:
        """Settings for building a rebuilt generation's indexes (none on SQLite: its writer's
        page cache is already large)."""

    def _index(
        self,
        cursor: Any,
        table: Table,
        generation: int,
        only: tuple[tuple[str, ...], ...] | None = None,
    ) -> None:
        name = physical(table, generation)
        for number, columns in enumerate(table.indexes):
            if only is None or columns in only:
                cursor.execute(
                    f"CREATE INDEX IF NOT EXISTS {name}_i{number} ON {name} ({', '.join(columns)})"
                )

    def drop(self, model: ReadModel, generation: int) -> None:
        with self._transaction(write=True) as cursor:
            for table in model.tables:
                cursor.execute(f"DROP TABLE IF EXISTS {physical(table, generation)}")
            cursor.execute(
                self._sql(f"DELETE FROM {self.tracking_table} WHERE application_name = ?"),
                (tracking_name(model.name, generation),),
            )

    def switch(self, model: ReadModel, generation: int) -> None:
        with self._transaction(write=True) as cursor:
            self._ensure_live_table(cursor)
            for table in model.tables:
                cursor.execute(f"DROP VIEW IF EXISTS {view(table)}")
                cursor.execute(
                    f"CREATE VIEW {view(table)} AS SELECT * FROM {physical(table, generation)}"
                )
            cursor.execute(
                self._sql(
                    f"INSERT INTO {LIVE} (model, generation) VALUES (?, ?) "
                    "ON CONFLICT (model) DO UPDATE SET generation = excluded.generation"
                ),
                (model.name, generation),
            )

    def position(self, model: str, generation: int) -> int:
        with self._transaction(write=False) as cursor:
            return self._position(cursor, tracking_name(model, generation))

    def _position(self, cursor: Any, name: str) -> int:
        cursor.execute(
            self._sql(
                f"SELECT notification_id FROM {self.tracking_table} WHERE application_name = ?"
            ),
            (name,),
        )
        found = self._fetch(cursor)
        return int(found[0][0]) if found and found[0][0] is not None else 0

    def rows(self, model: ReadModel, generation: int) -> Rows:
        def select(table: Table, column: str, values: Collection[Any]) -> list[Row]:
            if not values:
                return []
            with self._transaction(write=False) as cursor:
                return self._select_in(cursor, physical(table, generation), column, list(values))

        return select

    def _select_in(self, cursor: Any, table: str, column: str, values: list[Any]) -> list[Row]:
        raise NotImplementedError

    def write(self, model: ReadModel, generation: int, writes: Writes, at: int, to: int) -> None:
        name = tracking_name(model.name, generation)
        tables = {table.name: table for table in model.tables}
        with self._transaction(write=True) as cursor:
            self._lock(cursor, name)
            if self._position(cursor, name) != at:
                raise PositionMoved(name)
            for table_name, rows in writes.inserts.items():
                if not rows:
                    continue
                table = tables[table_name]
                for width, group in _by_width(table, _by_key(rows)):
                    self._insert(cursor, width, physical(table, generation), group)
            for table_name, rows in writes.upserts.items():
                table = tables[table_name]
                columns = table.column_names
                updates = ", ".join(
                    f"{column} = excluded.{column}" for column in columns[len(table.key) :]
                )
                conflict = f"ON CONFLICT ({', '.join(table.key)}) DO " + (
                    f"UPDATE SET {updates}" if updates else "NOTHING"
                )
                self._upsert(cursor, table, physical(table, generation), conflict, _by_key(rows))
            for table_name, sql, params in writes.statements:
                cursor.execute(
                    self._sql(sql.format(table=physical(table_name, generation))), params
                )
            if to > at:
                self._insert_tracking(cursor, Tracking(name, to))

    def _upsert(self, cursor: Any, table: Table, name: str, conflict: str, rows: list[Row]) -> None:
        columns = table.column_names
        cursor.executemany(
            self._sql(
                f"INSERT INTO {name} ({', '.join(columns)}) "
                f"VALUES ({', '.join('?' * len(columns))}) {conflict}"
            ),
            rows,
        )

    def _insert(self, cursor: Any, columns: Columns, name: str, rows: list[Row]) -> None:
        """Rows of the width of `columns`, the first columns of the table (the rest: NULL)."""
        names = ", ".join(column for column, _ in columns)
        cursor.executemany(
            self._sql(f"INSERT INTO {name} ({names}) VALUES ({', '.join('?' * len(columns))})"),
            rows,
        )

    @contextmanager
    def reading(self, views: Collection[str]) -> Iterator[Select]:
        with self._transaction(write=False) as cursor:
            self._begin_read(cursor, views)

            def select(sql: str, params: Row = ()) -> list[Row]:
                cursor.execute(self._sql(sql), params)
                return self._fetch(cursor)

            yield select

    def _begin_read(self, cursor: Any, views: Collection[str]) -> None:
        """SQLite: the first read takes the snapshot (schema and rows), nothing to do."""


class SQLiteViewStore(_SQLStore):
    def __init__(self, recorder: SQLiteProcessRecorder) -> None:
        self.recorder = recorder
        self.datastore = recorder.datastore

    @contextmanager
    def _transaction(self, *, write: bool) -> Iterator[Any]:
        with self.datastore.get_connection(commit=write) as connection:
            cursor = connection.cursor()
            try:
                if write:
                    cursor.execute(_SQLITE_CACHE)
                # IMMEDIATE: a writer takes the write lock before it reads the position.
                cursor.execute("BEGIN IMMEDIATE" if write else "BEGIN")
                yield cursor
            except BaseException:
                connection.rollback()
                raise
            else:
                if write:
                    connection.commit()
                else:
                    connection.rollback()

    def _insert_tracking(self, cursor: Any, tracking: Tracking) -> None:
        self.recorder._insert_tracking(cursor, tracking)

    def _table_names(self, prefix: str) -> tuple[str, Row]:
        return (
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE ? ESCAPE '\\'",
            (prefix.replace("_", r"\_") + "%",),
        )

    def _select_in(self, cursor: Any, table: str, column: str, values: list[Any]) -> list[Row]:
        found: list[Row] = []
        for start in range(0, len(values), _SQLITE_CHUNK):
            chunk = values[start : start + _SQLITE_CHUNK]
            cursor.execute(
                f"SELECT * FROM {table} WHERE {column} IN ({','.join('?' * len(chunk))})",
                chunk,
            )
            found.extend(self._fetch(cursor))
        return found


class PostgresViewStore(_SQLStore):
    integer = "BIGINT"

    def __init__(self, recorder: PostgresProcessRecorder) -> None:
        self.recorder = recorder
        self.datastore = recorder.datastore
        self.tracking_table = f'"{recorder.datastore.schema}"."{recorder.tracking_table_name}"'

    @contextmanager
    def _transaction(self, *, write: bool) -> Iterator[Any]:
        with self.datastore.transaction(commit=write) as cursor:
            yield cursor

    def _sql(self, sql: str) -> str:
        return sql.replace("%", "%%").replace("?", "%s")

    def _fetch(self, cursor: Any) -> list[Row]:
        return [tuple(row.values()) for row in cursor.fetchall()]

    def _before_indexing(self, cursor: Any) -> None:
        # A million events' audit index sorts in memory instead of in files (default 64 MB).
        cursor.execute("SET LOCAL maintenance_work_mem = '256MB'")

    def _lock(self, cursor: Any, name: str) -> None:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", (zlib.crc32(name.encode()),))
        # Rows that the log can always give again: the commit does not wait for the WAL's
        # flush. A crash may lose the last pages written, rows and position together.
        cursor.execute("SET LOCAL synchronous_commit TO OFF")

    def _insert(self, cursor: Any, columns: Columns, name: str, rows: list[Row]) -> None:
        if len(rows) < _COPY_FROM:
            super()._insert(cursor, columns, name, rows)
            return
        _copy(cursor, columns, name, rows)

    def _upsert(self, cursor: Any, table: Table, name: str, conflict: str, rows: list[Row]) -> None:
        if len(rows) < _COPY_FROM:
            super()._upsert(cursor, table, name, conflict, rows)
            return
        # COPY into a temporary table, then one INSERT … SELECT: a page's rows in one round trip
        # (two to three times faster than executemany for a rebuild's pages).
        stage = f"stage_{table.name}"
        cursor.execute(
            f"CREATE TEMPORARY TABLE IF NOT EXISTS {stage} (LIKE {name}) ON COMMIT DELETE ROWS"
        )
        _copy(cursor, table.columns, stage, rows)
        columns = ", ".join(table.column_names)
        cursor.execute(f"INSERT INTO {name} ({columns}) SELECT {columns} FROM {stage} {conflict}")

    def _insert_tracking(self, cursor: Any, tracking: Tracking) -> None:
        self.recorder._insert_tracking(cursor, tracking)

    def _table_names(self, prefix: str) -> tuple[str, Row]:
        return (
            "SELECT tablename FROM pg_tables WHERE schemaname = %s AND tablename LIKE %s",
            (self.datastore.schema, prefix.replace("_", r"\_") + "%"),
        )

    def _select_in(self, cursor: Any, table: str, column: str, values: list[Any]) -> list[Row]:
        cursor.execute(f"SELECT * FROM {table} WHERE {column} = ANY(%s)", (values,))
        return self._fetch(cursor)

    def _begin_read(self, cursor: Any, views: Collection[str]) -> None:
        # One snapshot, taken after the views are locked: a switch waits for this read to end,
        # and a switch that came first is seen whole.
        cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        if views:
            cursor.execute(f"LOCK TABLE {', '.join(views)} IN ACCESS SHARE MODE")


def _copy(cursor: Any, columns: Columns, name: str, rows: list[Row]) -> None:
    """Rows into a PostgreSQL table by COPY in binary: the server parses no text (a fifth
    less of the write's time)."""
    names = ", ".join(column for column, _ in columns)
    with cursor.copy(f"COPY {name} ({names}) FROM STDIN (FORMAT BINARY)") as copy:
        copy.set_types(["int8" if kind == "integer" else "text" for _, kind in columns])
        for row in rows:
            copy.write_row(row)


def _by_width(table: Table, rows: list[Row]) -> list[tuple[Columns, list[Row]]]:
    """Inserted rows by how many of the table's first columns they give (`Writes.insert`),
    each group in the order given."""
    widths = {len(row) for row in rows}
    if len(widths) == 1:
        return [(table.columns[: widths.pop()], rows)]
    groups: dict[int, list[Row]] = {}
    for row in rows:
        groups.setdefault(len(row), []).append(row)
    return [(table.columns[:width], group) for width, group in groups.items()]


def _by_key(rows: dict[Row, Row]) -> list[Row]:
    """A page's rows in key order: each B-tree page of the table is rewritten once, not once
    for each of its rows scattered through the page (the keys are random: aggregate ids)."""
    return [rows[key] for key in sorted(rows)]


def addresses_table(recorder: ProcessRecorder, name: str) -> str:
    """The store's erasable table of clear addresses (`name`), as a reader names it in SQL."""
    if isinstance(recorder, PostgresProcessRecorder):
        return f'"{recorder.datastore.schema}"."{name}"'
    return name
