"""The audit trail read model: a row per stored change of every person and address — who, via
which source (sales / marketing / Salesforce), channel, reason, when it occurred and when it was
recorded — and a row per outcome of the live push (Salesforce accepted, refused, waiting). Each
unsubscribe's row also carries the Salesforce outcome of the push that followed it.

Addresses are their keys here; the clear address is never written (a reader that must show it
joins the store's erasable `optout_addresses` at read time).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import msgspec

from domain.person import Person
from projections.per_person import OUTCOMES, PERSON_TOPICS, utc_text
from projections.person_state import history_entry
from projections.views import Row, Rows, Select, Table, Writes, view

AUDIT = Table(
    "audit",
    (
        ("position", "integer"),
        ("person_id", "text"),
        ("person_key", "text"),
        ("version", "integer"),
        ("change", "text"),  # unsubscribed | unsubscribe_removed | person_linked | salesforce_…
        ("source", "text"),
        ("actor", "text"),
        ("actor_kind", "text"),
        ("channel", "text"),
        ("reason", "text"),
        ("mailbox", "text"),  # the key of the address the change named
        ("salesforce_id", "text"),  # the id a change named
        ("occurred_at", "text"),
        ("recorded_at", "text"),
        ("event_id", "text"),
        ("record_id", "text"),  # outcomes: the record asked for, and the one written
        ("written_id", "text"),
        ("field", "text"),
        ("salesforce_outcome", "text"),  # on an unsubscribe: what the push that followed did
        ("salesforce_outcome_at", "text"),
    ),
    key=("position",),
    indexes=(("person_key", "position"), ("occurred_at",), ("recorded_at",)),
)
KEYS = Table("audit_keys", (("person_id", "text"), ("person_key", "text")), key=("person_id",))
COLUMNS = AUDIT.column_names


class AuditTrail:
    name: str = "audit"
    tables: tuple[Table, ...] = (AUDIT, KEYS)
    topics: Sequence[str] = PERSON_TOPICS

    def apply(self, events: Sequence[tuple[int, object]], rows: Rows) -> Writes:
        keys: dict[str, str] = {}
        for _, event in events:
            if isinstance(event, Person.Registered):
                keys[event.originator_id.hex] = event.key
        wanted = {event.originator_id.hex for _, event in events} - keys.keys()  # type: ignore[attr-defined]
        keys.update((r[0], r[1]) for r in rows(KEYS, "person_id", wanted))
        writes = Writes()
        for position, event in events:
            person_id = event.originator_id.hex  # type: ignore[attr-defined]
            if isinstance(event, Person.Registered):
                writes.upsert(KEYS, (person_id, event.key))
                continue
            entry = history_entry(event)
            if entry is None or person_id not in keys:
                continue
            salesforce_id = getattr(event, "salesforce_id", None)
            writes.upsert(
                AUDIT,
                (
                    position,
                    person_id,
                    keys[person_id],
                    event.originator_version,  # type: ignore[attr-defined]
                    entry.change,
                    entry.source,
                    entry.actor,
                    getattr(event, "actor_kind", "system"),
                    entry.channel,
                    entry.reason,
                    entry.address,
                    salesforce_id,
                    utc_text(entry.occurred_at),
                    utc_text(entry.recorded_at),
                    entry.event_id,
                    entry.record_id,
                    entry.written_id,
                    entry.field,
                    None,
                    None,
                ),
            )
            if isinstance(event, OUTCOMES):
                _outcome_of_unsubscribes(writes, position, person_id, event)
        return writes


# Which earlier outcomes a new one replaces on the unsubscribes before it.
_REPLACES = {
    "accepted": "(salesforce_outcome IS NULL OR salesforce_outcome <> 'accepted')",
    "refused": "(salesforce_outcome IS NULL OR salesforce_outcome NOT LIKE 'accepted%')",
    "retrying": "(salesforce_outcome IS NULL OR salesforce_outcome LIKE 'waiting%' "
    "OR salesforce_outcome LIKE 'retrying%')",
    "waiting": "(salesforce_outcome IS NULL OR salesforce_outcome LIKE 'waiting%')",
}


def _outcome_of_unsubscribes(writes: Writes, position: int, person_id: str, event: object) -> None:
    if isinstance(event, Person.OptOutAccepted):
        kind, outcome, at = "accepted", "accepted", event.accepted_at
    elif isinstance(event, Person.OptOutRefused):
        kind = "retrying" if event.will_retry else "refused"
        outcome, at = f"{kind}: {event.code}", event.timestamp
    elif isinstance(event, Person.PushWaiting):
        kind, outcome, at = "waiting", f"waiting: {event.reason}", event.timestamp
    else:
        return
    writes.execute(
        AUDIT,
        "UPDATE {table} SET salesforce_outcome = ?, salesforce_outcome_at = ? "
        "WHERE person_id = ? AND change = 'unsubscribed' AND position < ? AND " + _REPLACES[kind],
        (outcome, utc_text(at), person_id, position),
    )


class AuditRow(msgspec.Struct, frozen=True, kw_only=True):
    """One unsubscribe of the report."""

    occurred_at: str
    recorded_at: str
    person_key: str
    source: str
    actor: str
    channel: str
    reason: str | None
    salesforce_outcome: str | None
    salesforce_outcome_at: str | None


class AuditReport(msgspec.Struct, frozen=True, kw_only=True):
    """Who unsubscribed via sales, marketing or Salesforce between `since` and `until`."""

    since: str
    until: str
    by: str  # occurred | recorded: which time the window applies to
    counts: dict[str, int]  # unsubscribes by source
    persons: dict[str, int]  # distinct persons and addresses by source
    rows: list[AuditRow]


SOURCES = ("sales", "marketing", "salesforce")
_REPORTED = (
    "occurred_at, recorded_at, person_key, source, actor, channel, reason, "
    "salesforce_outcome, salesforce_outcome_at"
)


def report(
    select: Select, since: datetime, until: datetime, *, by: str = "occurred"
) -> AuditReport:
    """Every unsubscribe in [since, until) by when it occurred (or was recorded), oldest first."""
    column = _time_column(by)
    found = select(
        f"SELECT {_REPORTED} FROM {view(AUDIT)} WHERE change = 'unsubscribed' "
        f"AND {column} >= ? AND {column} < ? ORDER BY {column}, position",
        (utc_text(since), utc_text(until)),
    )
    rows = [AuditRow(**dict(zip(_REPORTED.split(", "), row, strict=True))) for row in found]
    counts = dict.fromkeys(SOURCES, 0)
    persons: dict[str, set[str]] = {source: set() for source in SOURCES}
    for row in rows:
        counts[row.source] = counts.get(row.source, 0) + 1
        persons.setdefault(row.source, set()).add(row.person_key)
    return AuditReport(
        since=str(utc_text(since)),
        until=str(utc_text(until)),
        by=by,
        counts=counts,
        persons={source: len(keys) for source, keys in persons.items()},
        rows=rows,
    )


def export_rows(
    select: Select,
    since: datetime,
    until: datetime,
    *,
    by: str = "occurred",
    addresses_table: str | None = None,
) -> tuple[list[str], list[Row]]:
    """Every audit row in [since, until), in log order: the column names and the rows. With
    `addresses_table`, each row's clear address is joined in (None once erased)."""
    column = _time_column(by)
    names = list(COLUMNS)
    columns = ", ".join(f"a.{name}" for name in names)
    join = ""
    if addresses_table is not None:
        names.append("email")
        columns += ", e.email"
        join = f" LEFT JOIN {addresses_table} e ON e.mailbox = a.mailbox"
    found = select(
        f"SELECT {columns} FROM {view(AUDIT)} a{join} "
        f"WHERE a.{column} >= ? AND a.{column} < ? ORDER BY a.position",
        (utc_text(since), utc_text(until)),
    )
    return names, found


def _time_column(by: str) -> str:
    if by not in ("occurred", "recorded"):
        raise ValueError("by is occurred or recorded")
    return f"{by}_at"
