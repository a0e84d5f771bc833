"""The audit trail read model: a row per stored change of every person and address — who, via
which source (sales / marketing / Salesforce), channel, reason, when it occurred and when it was
recorded — and a row per outcome of the live push (Salesforce accepted, refused, waiting). Each
unsubscribe's row also carries the Salesforce outcome of the push that followed it.

Addresses are their keys here; the clear address is never written (a reader that must show it
joins the store's erasable `optout_addresses` at read time).
"""

from __future__ import annotations

from collections.abc import Sequence

from domain.person import Person
from projections.person_state import history_entry
from projections.person_states import OUTCOMES, PERSON_TOPICS, utc_text
from projections.views import Rows, Table, Writes

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
