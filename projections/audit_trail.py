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
from uuid import UUID

import msgspec

from projections.per_person import PERSON_TOPICS, utc_text
from projections.stored import (
    OUTCOMES,
    Accepted,
    Change,
    Fact,
    PersonLinked,
    Refused,
    Registered,
    Unsubscribed,
    UnsubscribeRemoved,
    Waiting,
    utc_texts,
)
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
    # (person_key, position): an outcome updates the unsubscribes before it, and `person` reads
    # a person's history. Not kept up while a rebuild loads (random keys: a commit rewrote most
    # of its pages); the outcomes' updates wait for it (`Writes`).
    indexes=(("person_key", "position"), ("occurred_at",), ("recorded_at",)),
)
KEYS = Table("audit_keys", (("person_id", "text"), ("person_key", "text")), key=("person_id",))
COLUMNS = AUDIT.column_names


class AuditTrail:
    name: str = "audit"
    tables: tuple[Table, ...] = (AUDIT, KEYS)
    topics: Sequence[str] = PERSON_TOPICS

    def apply(self, events: Sequence[tuple[int, Fact]], rows: Rows) -> Writes:
        keys: dict[str, str] = {}
        for _, event in events:
            if isinstance(event, Registered):
                keys[event.person_id] = event.key
        wanted = {event.person_id for _, event in events} - keys.keys()
        keys.update((r[0], r[1]) for r in rows(KEYS, "person_id", wanted))
        writes = Writes()
        changes = [event for _, event in events if isinstance(event, Change)]
        # Each change's event id and times as text, made for the whole page at once.
        texts = zip(
            _texts([change.event.id for change in changes]),
            utc_texts([change.occurred.text for change in changes]),
            utc_texts([change.stamp.text for change in changes]),
            strict=True,
        )
        names = _CHANGE_NAMES
        # A row at an event's position: no earlier page wrote it (`Writes.insert`, inline).
        inserts = writes.inserts[AUDIT.name] = {}
        for position, event in events:
            person_id = event.person_id
            if isinstance(event, Change):
                event_id, occurred_at, recorded_at = next(texts)
                key = keys.get(person_id)
                if key is None:
                    continue
                # A change's row (inline: a call a row was a tenth of the fold). No outcome
                # columns: NULL (`Writes.insert`).
                named = event.actor_name or event.actor_id
                kind = event.actor_kind
                inserts[(position,)] = (
                    position,
                    person_id,
                    key,
                    event.version,
                    names[type(event)],
                    event.source,
                    f"{kind}:{named}" if named else kind,
                    kind,
                    event.channel,
                    event.reason,
                    event.mailbox,
                    event.salesforce_id,
                    occurred_at,
                    recorded_at,
                    event_id,
                )
                continue
            if isinstance(event, Registered):
                writes.upsert(KEYS, (person_id, event.key))
                continue
            key = keys.get(person_id)
            if key is None:
                continue
            if isinstance(event, OUTCOMES):
                inserts[(position,)] = _outcome_row(position, key, event)
                _outcome_of_unsubscribes(writes, position, key, event)
        return writes


# The history line of `projections.person_state.history_entry`, from facts (that one, from the
# aggregates' events, is the oracle the read-model tests compare with).
_CHANGE_NAMES = {
    Unsubscribed: "unsubscribed",
    UnsubscribeRemoved: "unsubscribe_removed",
    PersonLinked: "person_linked",
}


def _texts(ids: list[UUID]) -> list[str]:
    """`str` of each UUID, made by msgspec in one call (`UUID.__str__` is Python: it was a
    third of the audit's fold)."""
    return _as_texts(_encode(ids))


_encode = msgspec.json.Encoder().encode
_as_texts = msgspec.json.Decoder(list[str]).decode


def _outcome_row(position: int, key: str, event: Fact) -> Row:
    record_id = written_id = field = None
    occurred_at = event.stamp
    if isinstance(event, Accepted):
        change, occurred_at = "salesforce_accepted", event.accepted
        through = (
            f" (a converted Lead: written to Contact {event.converted_contact_id})"
            if event.converted_contact_id
            else ""
        )
        reason = f"{event.object_type} {event.record_id}: {event.field} = true{through}"
        record_id, written_id, field = event.record_id, event.written_id, event.field
    elif isinstance(event, Refused):
        retry = "retried later" if event.will_retry else "not retried"
        change, reason = "salesforce_refused", f"{event.code}: {event.message} ({retry})"
        record_id = event.record_id
    else:
        assert isinstance(event, Waiting)
        detail = f": {event.detail}" if event.detail else ""
        change, reason = "push_waiting", f"{event.reason}{detail}"
    return (
        position,
        event.person_id,
        key,
        event.version,
        change,
        "salesforce",
        "system:pusher",
        "system",
        "api",
        reason,
        None,
        None,
        occurred_at.utc,
        event.stamp.utc,
        f"{UUID(event.person_id)}/{event.version}",
        record_id,
        written_id,
        field,
    )


# Which earlier outcomes a new one replaces on the unsubscribes before it.
_REPLACES = {
    "accepted": "(salesforce_outcome IS NULL OR salesforce_outcome <> 'accepted')",
    "refused": "(salesforce_outcome IS NULL OR salesforce_outcome NOT LIKE 'accepted%')",
    "retrying": "(salesforce_outcome IS NULL OR salesforce_outcome LIKE 'waiting%' "
    "OR salesforce_outcome LIKE 'retrying%')",
    "waiting": "(salesforce_outcome IS NULL OR salesforce_outcome LIKE 'waiting%')",
}
# One text per kind (a rebuild holds every outcome's statement until its indexes exist).
_UPDATES = {
    kind: "UPDATE {table} SET salesforce_outcome = ?, salesforce_outcome_at = ? "
    "WHERE person_key = ? AND change = 'unsubscribed' AND position < ? AND " + replaces
    for kind, replaces in _REPLACES.items()
}


def _outcome_of_unsubscribes(writes: Writes, position: int, key: str, event: Fact) -> None:
    if isinstance(event, Accepted):
        kind, outcome, at = "accepted", "accepted", event.accepted_at
    elif isinstance(event, Refused):
        kind = "retrying" if event.will_retry else "refused"
        outcome, at = f"{kind}: {event.code}", event.recorded_at
    elif isinstance(event, Waiting):
        kind, outcome, at = "waiting", f"waiting: {event.reason}", event.recorded_at
    else:
        return
    writes.execute(AUDIT, _UPDATES[kind], (outcome, utc_text(at), key, position))


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
