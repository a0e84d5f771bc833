"""One way to follow the event log from a position: read a page after it, or wait (bounded) for
something new. On PostgreSQL the wait is LISTEN on the channel eventsourcing NOTIFYs on every
insert (no busy polling); on SQLite it polls with a short interval.

Readers (the projections, the pusher) keep their own position; the follower keeps none.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Sequence
from typing import Any

import psycopg
from eventsourcing.persistence import ApplicationRecorder, Notification, OperationalError
from eventsourcing.postgres import PostgresApplicationRecorder
from eventsourcing.sqlite import SQLiteApplicationRecorder
from psycopg.rows import tuple_row
from psycopg.sql import SQL, Identifier

log = logging.getLogger(__name__)
SQLITE_POLL_S = 0.05  # SQLite has no notifications: a short, cheap poll
LISTEN_SLICE_S = 0.5  # a LISTEN wait is cut into slices so that a stop is seen promptly
StoredRow = tuple[int, str, int, str, bytes]  # position, aggregate id (hex), version, topic, state


class LogFollower:
    """Pages of the log after a position (optionally of some topics only), and a bounded wait
    for anything new. `stop()` ends any wait at once; a stopped follower never waits again."""

    def __init__(self, recorder: ApplicationRecorder, *, poll_s: float = SQLITE_POLL_S) -> None:
        self.recorder = recorder
        self.poll_s = poll_s
        self.stopping = threading.Event()
        self._listener: Any = None  # the PostgreSQL connection that LISTENs, opened on first wait
        self._pool_connection: Any = None

    @property
    def listens(self) -> bool:
        """Whether waits are woken by the database (PostgreSQL) rather than polled (SQLite)."""
        return isinstance(self.recorder, PostgresApplicationRecorder)

    @property
    def reads_ahead(self) -> bool:
        """Whether a page is best read while the one before is applied: the database reads in
        its own process (PostgreSQL), not in this one's thread (SQLite)."""
        return self.listens

    def page(self, after: int, limit: int, topics: Sequence[str] = ()) -> Sequence[Notification]:
        """Up to `limit` notifications with an id above `after`, in log order."""
        return self.recorder.select_notifications(
            after, limit, topics=list(topics), inclusive_of_start=False
        )

    def stored_page(self, after: int, limit: int, topics: Sequence[str]) -> list[StoredRow]:
        """The same page as `page`, as plain rows (position, aggregate id as 32 hex digits,
        version, topic, state): what the read models decode themselves, without a Notification
        and a UUID per row (half the cost of `page`)."""
        recorder = self.recorder
        if isinstance(recorder, PostgresApplicationRecorder):
            # The id's hex made by the server, and every column in binary: a bytea state is not
            # hex-encoded and decoded again (the page reads two to three times faster).
            statement = SQL(
                "SELECT notification_id, encode(uuid_send(originator_id), 'hex'), "
                "originator_version, topic, state FROM {0}.{1} WHERE notification_id > %s "
                "{2}ORDER BY notification_id LIMIT %s"
            ).format(
                Identifier(recorder.datastore.schema),
                Identifier(recorder.events_table_name),
                SQL("AND topic = ANY(%s) " if topics else ""),
            )
            params = (after, list(topics), limit) if topics else (after, limit)
            with (
                recorder.datastore.get_connection() as connection,
                connection.cursor(row_factory=tuple_row) as cursor,
            ):
                cursor.execute(statement, params, prepare=True, binary=True)
                return cursor.fetchall()
        assert isinstance(recorder, SQLiteApplicationRecorder)
        of_topics = f"AND topic IN ({','.join('?' * len(topics))}) " if topics else ""
        with recorder.datastore.transaction(commit=False) as cursor:
            cursor.sqlite_cursor.row_factory = None  # plain tuples, not the datastore's sqlite3.Row
            cursor.execute(  # eventsourcing's SQLite recorder stores the id as its hex
                f"SELECT rowid, originator_id, originator_version, topic, "  # noqa: S608
                f"state FROM {recorder.events_table_name} WHERE rowid > ? {of_topics}"
                "ORDER BY rowid LIMIT ?",
                (after, *topics, limit),
            )
            return cursor.fetchall()

    def head(self) -> int:
        """The id of the last notification in the log (0 for an empty log)."""
        return self.recorder.max_notification_id() or 0

    def wait(self, after: int, timeout_s: float, topics: Sequence[str] = ()) -> bool:
        """Waits up to `timeout_s` for a notification above `after` (of these topics); True as
        soon as there is one, False on timeout or stop."""
        deadline = time.monotonic() + timeout_s
        look = True  # on PostgreSQL, later looks only once the database says something changed
        while not self.stopping.is_set():
            if self.listens and self._listener is None:
                self._listen()  # before looking: a NOTIFY sent after the look is then not missed
                look = True
            if look and self.page(after, 1, topics):
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            if self.listens:
                look = self._wait_for_notify(min(remaining, LISTEN_SLICE_S))
            else:
                self.stopping.wait(min(remaining, self.poll_s))
        return False

    def stop(self) -> None:
        self.stopping.set()

    def close(self) -> None:
        self.stop()
        self._unlisten()

    def _unlisten(self) -> None:
        if self._pool_connection is not None:
            with contextlib.suppress(Exception):
                self._listener.execute("UNLISTEN *")
            with contextlib.suppress(Exception):
                self._pool_connection.__exit__(None, None, None)
        self._listener = self._pool_connection = None

    def _listen(self) -> None:
        if self._listener is not None:
            return
        recorder = self.recorder
        assert isinstance(recorder, PostgresApplicationRecorder)
        # A pooled connection held for the follower's life (the pool returns it on close); it is
        # in autocommit (eventsourcing sets it), so notifications arrive between statements.
        self._pool_connection = recorder.datastore.get_connection()
        self._listener = self._pool_connection.__enter__()
        try:
            self._listener.execute(SQL("LISTEN {0}").format(Identifier(recorder.channel_name)))
        except psycopg.Error as error:
            self._unlisten()
            raise OperationalError(str(error)) from error

    def _wait_for_notify(self, timeout_s: float) -> bool:
        """Whether something may have changed: a NOTIFY came (or the listening broke)."""
        try:
            came = False
            for _ in self._listener.notifies(timeout=timeout_s, stop_after=1):
                came = True  # the generator runs to its end: it holds the connection's lock
            return came
        except psycopg.Error as error:
            # The listening connection broke (a restarted server): the next wait listens on a
            # new one; this one waits out its slice, so a server that is down is not hammered.
            log.warning("the event log's notifications stopped (%s): listening again", error)
            self._unlisten()
            self.stopping.wait(timeout_s)
            return True
