"""Walks the event log and its chain (`adapters.log_chain`) in store order and names the first
event altered, deleted, re-ordered or written outside the chain.

The chain proves the log unchanged since each row was written, provided its head is trusted:
someone able to rewrite the log *and* recompute every later chain row can only be caught against
a head kept elsewhere (`expect_head`). Removing the newest events together with their chain rows
is likewise only visible against a head kept after them.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Protocol, runtime_checkable

import msgspec

from adapters.log_chain import GENESIS, ChainRow, event_digest, link

PAGE = 1000


@runtime_checkable
class Chained(Protocol):
    """An event store that keeps the chain (adapters.event_store's recorders)."""

    def chain_rows(self, after_seq: int, limit: int) -> list[ChainRow]: ...

    def select_notifications(
        self,
        start: int | None,
        limit: int,
        stop: int | None = None,
        topics: Sequence[str] = (),
        *,
        inclusive_of_start: bool = True,
    ) -> Sequence[Any]: ...


class Problem(msgspec.Struct, frozen=True, kw_only=True):
    # altered | deleted | reordered | unchained | chain_altered | head_not_found
    kind: str
    notification_id: int | None
    detail: str
    originator_id: str | None = None
    originator_version: int | None = None


class Verdict(msgspec.Struct, frozen=True, kw_only=True):
    ok: bool
    events: int  # events checked against the chain
    chain_rows: int
    head: str  # hex: keep it elsewhere, and pass it back as --expect-head
    last_event: int | None  # the notification id the head covers up to
    sealed_events: int  # stored before the chain existed, sealed when it was created
    sealed_at: str | None
    expected_head: str | None = None
    problem: Problem | None = None


def verify(store: Chained, expect_head: bytes | None = None, page: int = PAGE) -> Verdict:
    events = _events(store, page)
    pending = next(events, None)
    head, checked, rows, sealed, sealed_at = GENESIS, 0, 0, 0, None
    last_event: int | None = None
    kept_found = expect_head in (None, GENESIS)  # every chain starts from the genesis head

    def verdict(problem: Problem | None) -> Verdict:
        if problem is None and not kept_found:
            problem = Problem(
                kind="head_not_found",
                notification_id=None,
                detail="the kept head is not in the chain: the log and its chain were rewritten "
                "(or the head belongs to another store)",
            )
        return Verdict(
            ok=problem is None,
            events=checked,
            chain_rows=rows,
            head=head.hex(),
            last_event=last_event,
            sealed_events=sealed,
            sealed_at=sealed_at,
            expected_head=expect_head.hex() if expect_head is not None else None,
            problem=problem,
        )

    for row in _rows(store, page):
        if link(head, row.first_id, row.digests) != row.head:
            return verdict(
                Problem(
                    kind="chain_altered",
                    notification_id=row.first_id,
                    detail=f"the chain row of events #{row.first_id}-#{row.last_id} does not "
                    "follow from the one before it: a chain row was altered or removed",
                )
            )
        rows += 1
        for notification_id in range(row.first_id, row.last_id + 1):
            if pending is None or pending.id > notification_id:
                return verdict(_deleted(notification_id))
            if pending.id < notification_id:
                return verdict(_unchained(pending))
            digest = event_digest(pending)
            if digest != row.digest_at(notification_id):
                return verdict(_altered(store, pending, digest, page))
            checked += 1
            pending = next(events, None)
        head, last_event = row.head, row.last_id
        kept_found = kept_found or head == expect_head
        if row.sealed:
            sealed, sealed_at = sealed + row.count, row.recorded_at
    if pending is not None:
        return verdict(_unchained(pending))
    return verdict(None)


def _events(store: Chained, page: int) -> Iterator[Any]:
    start: int | None = None
    while True:
        notifications = store.select_notifications(start, page, inclusive_of_start=start is None)
        yield from notifications
        if len(notifications) < page:
            return
        start = notifications[-1].id


def _rows(store: Chained, page: int) -> Iterator[ChainRow]:
    after = 0
    while True:
        rows = store.chain_rows(after, page)
        yield from rows
        if len(rows) < page:
            return
        after = rows[-1].seq


def _named(event: Any, kind: str, detail: str) -> Problem:
    return Problem(
        kind=kind,
        notification_id=event.id,
        detail=detail,
        originator_id=str(event.originator_id),
        originator_version=event.originator_version,
    )


def _deleted(notification_id: int) -> Problem:
    return Problem(
        kind="deleted",
        notification_id=notification_id,
        detail=f"event #{notification_id} is in the chain but no longer in the log",
    )


def _unchained(event: Any) -> Problem:
    return _named(
        event,
        "unchained",
        f"event #{event.id} is in the log but in no chain row: written outside optout-sync's "
        "store (or by a version without the chain after it was created)",
    )


def _altered(store: Chained, event: Any, digest: bytes, page: int) -> Problem:
    """An event that differs from its digest: another position's event moved here, the id of a
    deleted event reused, or altered in place."""
    for row in _rows(store, page):
        for index in range(row.count):
            if row.digests[index * 32 : (index + 1) * 32] != digest:
                continue
            recorded_at = row.first_id + index
            if recorded_at == event.id:
                return _named(
                    event,
                    "deleted",
                    f"event #{event.id} was deleted and its number reused by a later write",
                )
            return _named(
                event,
                "reordered",
                f"event #{event.id} holds the event the chain recorded as #{recorded_at}",
            )
    return _named(event, "altered", f"event #{event.id} differs from what was recorded")
