"""How a read model is kept: it follows the event log from its own tracked position, and writes
its rows and its new position in one transaction; it resumes where it stopped; it is rebuilt
beside the live copy (a new *generation* of its tables) and switched to atomically.

A read model is pure: `apply` turns a page of (position, event) into row writes, reading the
rows it needs through `Rows`. Where the rows live (SQLite, PostgreSQL) is the `ViewStore` port,
built in `adapters.view_store`; how the log is followed is the `Follower` port
(`adapters.log_follower`).
"""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

Row = tuple[Any, ...]


@dataclass(frozen=True)
class Table:
    """A table of a read model: `columns` as (name, "text" | "integer"), the first `key` ones
    its primary key. Physical tables are `rm_<name>_g<generation>`; readers use the view
    `rm_<name>`, which always points at the live generation."""

    name: str
    columns: tuple[tuple[str, str], ...]
    key: tuple[str, ...]
    indexes: tuple[tuple[str, ...], ...] = ()
    # Those of `indexes` the model's reads of its rows (`Rows`) use; a rebuilt generation gets
    # the others only once built (before it goes live): one index build instead of upkeep on
    # every insert. Its `Writes.statements` wait for them (`Projector`): they need none.
    write_indexes: tuple[tuple[str, ...], ...] = ()

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.columns)


def view(table: Table | str) -> str:
    """The name readers use for a read model's table: a view of its live generation."""
    return f"rm_{table if isinstance(table, str) else table.name}"


@dataclass
class Writes:
    """What a page of events does to a read model's tables, applied in one transaction:
    `inserts` add rows whose keys the table does not hold, `upserts` replace rows by primary
    key; then `statements`, in order, each SQL with `?` parameters and `{table}` standing for
    the physical name of the table it names.

    A rebuild holds its statements back until the fresh generation's indexes are built, then
    runs them in log order, after the inserts and upserts of every later page: a statement must
    not change rows that later pages add or replace, and `apply` must not read what it changes
    (the audit's outcomes update the unsubscribes before them, and it reads only its keys)."""

    upserts: dict[str, dict[Row, Row]] = field(default_factory=dict)
    statements: list[tuple[str, str, Row]] = field(default_factory=list)
    inserts: dict[str, dict[Row, Row]] = field(default_factory=dict)

    def upsert(self, table: Table, row: Row) -> None:
        key = row[: len(table.key)]
        self.upserts.setdefault(table.name, {})[key] = row

    def insert(self, table: Table, row: Row) -> None:
        """A row whose key the table cannot hold yet: the model read that it is absent (a page
        is written only if no other writer moved the generation meanwhile), or its key is the
        position of an event of this page. Written without a conflict check (on PostgreSQL by
        COPY straight into the table); one that is there after all fails the write. The row
        may stop short of the table's last columns: those are NULL (SQLite's Python driver
        binds a None as slowly as four texts)."""
        key = row[: len(table.key)]
        self.inserts.setdefault(table.name, {})[key] = row

    def execute(self, table: Table, sql: str, params: Row = ()) -> None:
        self.statements.append((table.name, sql, params))


class Rows(Protocol):
    def __call__(self, table: Table, column: str, values: Collection[Any]) -> list[Row]:
        """The rows of a table (of the generation being written) whose column is in values."""


class ReadModel(Protocol):
    name: str
    tables: tuple[Table, ...]
    topics: Sequence[str]  # the event topics it follows

    def apply(self, events: Sequence[tuple[int, Any]], rows: Rows) -> Writes:
        """The writes for these events (in log order), given the rows as they are now."""


class PositionMoved(Exception):
    """Another runner wrote this generation meanwhile: nothing was written; read again."""


class ViewStore(Protocol):
    def live_generation(self, model: str) -> int | None: ...

    def generations(self, model: ReadModel) -> list[int]:
        """Generations whose tables exist (the live one, and any being built)."""

    def create(self, model: ReadModel, generation: int, *, indexed: bool = True) -> None:
        """Its tables, with every index (`indexed`) or only the write indexes."""

    def index(self, model: ReadModel, generation: int) -> None:
        """Makes the indexes a generation made without `indexed` lacks."""

    def drop(self, model: ReadModel, generation: int) -> None: ...

    def switch(self, model: ReadModel, generation: int) -> None:
        """Points the model's views at this generation, in one transaction."""

    def position(self, model: str, generation: int) -> int: ...

    def rows(self, model: ReadModel, generation: int) -> Rows: ...

    def write(self, model: ReadModel, generation: int, writes: Writes, at: int, to: int) -> None:
        """Applies the writes and moves the position from `at` to `to`, in one transaction;
        PositionMoved if the stored position is no longer `at`."""

    def reading(self, views: Collection[str]) -> AbstractContextManager[Select]:
        """One consistent read of these views (`rm_<table>` names) and the store's tables."""


class Select(Protocol):
    def __call__(self, sql: str, params: Row = ()) -> list[Row]: ...


# A stored event as a read model reads it: position, aggregate id (32 hex digits), version, topic,
# state (`adapters.log_follower.LogFollower.stored_page`).
StoredRow = tuple[int, str, int, str, bytes]


class Follower(Protocol):
    stopping: threading.Event

    def page(self, after: int, limit: int, topics: Sequence[str] = ()) -> Sequence[Any]: ...

    def stored_page(self, after: int, limit: int, topics: Sequence[str]) -> list[StoredRow]: ...

    def head(self) -> int: ...

    def wait(self, after: int, timeout_s: float, topics: Sequence[str] = ()) -> bool: ...


PAGE = 5000  # notifications per transaction
# A rebuild's transactions are bigger: at a million events each page rewrites fewer of the same
# B-tree pages (SQLite writes a page it changed once per transaction).
REBUILD_PAGE = 25_000
# A page of stored rows to (position, what the read models read), in log order.
Decode = Callable[[Sequence[StoredRow]], Sequence[tuple[int, Any]]]
Progress = Callable[[int, int], None]  # (position, head)


@dataclass
class Projector:
    """Runs one read model: catches a generation up with the log, follows it, rebuilds it."""

    model: ReadModel
    store: ViewStore
    follower: Follower
    decode: Decode
    page: int = PAGE
    rebuild_page: int = REBUILD_PAGE
    # A rebuild's statements, by fresh generation, held back until its indexes exist (`Writes`).
    held: dict[int, list[tuple[str, str, Row]]] = field(default_factory=dict, repr=False)

    def ensure(self) -> int:
        """The live generation, made (empty, position 0) if the model was never built."""
        live = self.store.live_generation(self.model.name)
        if live is None:
            try:
                self.store.create(self.model, 1)
                self.store.switch(self.model, 1)
            except Exception:
                if self.store.live_generation(self.model.name) is None:
                    raise
                # another process made it first (PostgreSQL's catalog can refuse the race)
            live = self.store.live_generation(self.model.name) or 1
        return live

    def catch_up(
        self,
        generation: int | None = None,
        *,
        until: int | None = None,
        progress: Progress | None = None,
        page: int | None = None,
    ) -> int:
        """Applies the log to a generation (the live one by default) up to `until` (the log's
        head now, by default); returns its position."""
        head = self.follower.head() if until is None else until  # first: the log must exist
        generation = self.ensure() if generation is None else generation
        at = self.store.position(self.model.name, generation)
        with ReadAhead(self.follower, page or self.page, self.model.topics) as read:
            while at < head and not self.follower.stopping.is_set():
                at = self.step(generation, at, head, page, read)
                if progress is not None:
                    progress(at, head)
        return at

    def step(
        self,
        generation: int,
        at: int,
        head: int | None = None,
        page: int | None = None,
        read: Callable[[int], Sequence[StoredRow]] | None = None,
    ) -> int:
        """One page after `at`; returns the new position (re-read if another runner moved it)."""
        with without_cycle_collection():
            # The page's objects are freed as `_page` returns, before the collector is back on:
            # else its first pass after each page goes over them all.
            return self._page(generation, at, head, page or self.page, read)

    def _page(
        self,
        generation: int,
        at: int,
        head: int | None,
        page: int,
        read: Callable[[int], Sequence[StoredRow]] | None,
    ) -> int:
        notifications = (
            read(at) if read is not None else self.follower.stored_page(at, page, self.model.topics)
        )
        if not notifications:
            # Nothing of ours up to the head: the position moves there without rows.
            to = max(at, head if head is not None else self.follower.head())
            return self._write(generation, Writes(), at, to) if to > at else at
        last = notifications[-1][0]
        to = max(last if len(notifications) == page or head is None else head, last)
        events = self.decode(notifications)
        writes = self.model.apply(events, self.store.rows(self.model, generation))
        return self._write(generation, writes, at, to)

    def _write(self, generation: int, writes: Writes, at: int, to: int) -> int:
        try:
            self.write(generation, writes, at, to)
        except PositionMoved:
            return self.store.position(self.model.name, generation)
        return to

    def write(self, generation: int, writes: Writes, at: int, to: int) -> None:
        """`ViewStore.write`, the statements held back while a rebuild lacks its indexes."""
        held = self.held.get(generation)
        if held is None or not writes.statements:
            self.store.write(self.model, generation, writes, at, to)
            return
        self.store.write(self.model, generation, Writes(writes.upserts, [], writes.inserts), at, to)
        held.extend(writes.statements)  # once written: a page read again holds them once

    def advance(self) -> bool:
        """One page into the live generation if it lags; True if it did. A rebuild that
        switched and dropped the tables meanwhile is followed into its generation."""
        generation = self.ensure()
        at = self.store.position(self.model.name, generation)
        head = self.follower.head()
        if at >= head:
            return False
        try:
            self.step(generation, at, head)
        except Exception:
            if self.store.live_generation(self.model.name) == generation:
                raise
        return True

    def rebuild(self, progress: Progress | None = None) -> int:
        """Builds a fresh generation beside the live one from the start of the log, switches to
        it once caught up (readers see the old or the new, never a half-built one), and drops
        the old. Returns the new generation."""
        fresh = self.fresh_generation()
        try:
            self.catch_up(fresh, progress=progress, page=self.rebuild_page)
        except BaseException:
            self.held.pop(fresh, None)
            self.store.drop(self.model, fresh)
            raise
        return self.go_live(fresh, progress)

    def fresh_generation(self) -> int:
        """A new, empty generation beside the live one (position 0)."""
        live = self.ensure()
        fresh = max([live, *self.store.generations(self.model)]) + 1
        self.store.create(self.model, fresh, indexed=False)
        self.held[fresh] = []
        return fresh

    def go_live(self, fresh: int, progress: Progress | None = None) -> int:
        """Catches the fresh generation up once more (what arrived during the build: the live
        copy lags as much), switches the views to it in one transaction, drops the old."""
        try:
            self.store.index(self.model, fresh)
            held = self.held.pop(fresh, [])
            if held:  # in log order, in one transaction (the position stays)
                at = self.store.position(self.model.name, fresh)
                self.store.write(self.model, fresh, Writes(statements=held), at, at)
            self.catch_up(fresh, progress=progress, page=self.rebuild_page)
            if self.follower.stopping.is_set():
                raise InterruptedError("the rebuild was stopped before it caught up")
            self.store.switch(self.model, fresh)
        except BaseException:
            self.held.pop(fresh, None)
            self.store.drop(self.model, fresh)
            raise
        for old in self.store.generations(self.model):
            if old != fresh:
                self.store.drop(self.model, old)
        return fresh

    def status(self) -> Status:
        live = self.store.live_generation(self.model.name)
        head = self.follower.head()
        if live is None:
            return Status(self.model.name, None, 0, head, head)
        at = self.store.position(self.model.name, live)
        return Status(self.model.name, live, at, head, max(0, head - at))


def rebuild_together(
    projectors: Sequence[Projector], progress: Progress | None = None
) -> dict[str, int]:
    """Rebuilds several read models that follow the same topics in one pass over the log: each
    page is read and decoded once, then applied to each model in its own transaction. Returns
    each one's new generation."""
    first = projectors[0]
    fresh = {p.model.name: p.fresh_generation() for p in projectors}
    try:
        head, at = first.follower.head(), 0
        while at < head and not first.follower.stopping.is_set():
            with without_cycle_collection():
                # The page's objects are freed as `_together` returns, before the collector is
                # back on (as `Projector.step`).
                at = _together(projectors, fresh, at, head)
            if progress is not None:
                progress(at, head)
    except BaseException:
        for projector in projectors:
            projector.held.pop(fresh[projector.model.name], None)
            projector.store.drop(projector.model, fresh[projector.model.name])
        raise
    return {p.model.name: p.go_live(fresh[p.model.name], progress) for p in projectors}


def _together(projectors: Sequence[Projector], fresh: dict[str, int], at: int, head: int) -> int:
    """One page of `rebuild_together`: read and decoded once, applied to each model."""
    first = projectors[0]
    notifications = first.follower.stored_page(at, first.rebuild_page, first.model.topics)
    to = notifications[-1][0] if len(notifications) == first.rebuild_page else head
    to = max([to, *(n[0] for n in notifications[-1:])])  # news past the head, too
    events = first.decode(notifications)
    for projector in projectors:
        generation = fresh[projector.model.name]
        rows = projector.store.rows(projector.model, generation)
        writes = projector.model.apply(events, rows)
        projector.write(generation, writes, at, to)
    return to


def follow(
    projectors: Sequence[Projector],
    follower: Follower,
    *,
    idle_exit_s: float | None = None,
    wait_s: float = 1.0,
) -> None:
    """Keeps every read model up with the log until stopped (or idle for `idle_exit_s`): pages
    while any lags, then a bounded wait for news (LISTEN on PostgreSQL, a short poll on SQLite)."""
    last_news = time.monotonic()
    while not follower.stopping.is_set():
        head = follower.head()  # read before looking: what comes after it ends the wait
        moved = [projector.advance() for projector in projectors]
        if any(moved):
            last_news = time.monotonic()
            continue
        if idle_exit_s is not None and time.monotonic() - last_news >= idle_exit_s:
            return
        timeout = wait_s if idle_exit_s is None else min(wait_s, idle_exit_s)
        if follower.wait(head, timeout):
            last_news = time.monotonic()


@dataclass(frozen=True)
class Status:
    name: str
    generation: int | None  # None: never built
    position: int
    head: int
    lag: int  # notifications of the log not yet applied (of any topic)


class ReadAhead:
    """Pages of the log after a position, each full page's successor read meanwhile in another
    thread where the database does the reading in its own process (PostgreSQL: the follower's
    `reads_ahead`), while this one's page is decoded, applied and written. On SQLite the read is
    this process's own work (and would take the GIL back for every row): pages are read in turn.
    """

    def __init__(self, follower: Follower, size: int, topics: Sequence[str]) -> None:
        self.follower, self.size, self.topics = follower, size, topics
        ahead = getattr(follower, "reads_ahead", False)
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="read-ahead") if ahead else None
        self.next: tuple[int, Future[Sequence[StoredRow]]] | None = None

    def __call__(self, at: int) -> Sequence[StoredRow]:
        """The page after `at` (read ahead if it was; one read after another position, after
        another runner moved the generation, is discarded)."""
        ahead, self.next = self.next, None
        if ahead is not None and ahead[0] == at:
            page = ahead[1].result()
        else:
            page = self.follower.stored_page(at, self.size, self.topics)
        if self.pool is not None and len(page) == self.size:
            last = page[-1][0]
            self.next = (
                last,
                self.pool.submit(self.follower.stored_page, last, self.size, self.topics),
            )
        return page

    def __enter__(self) -> ReadAhead:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)


@contextmanager
def without_cycle_collection() -> Iterator[None]:
    """A page makes and drops a few hundred thousand small objects, none in a cycle (plain
    reference counting frees them): the cyclic collector's passes over them while a page is
    read, applied and written cost a fifth of a rebuild's time, and find nothing."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def pages(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
