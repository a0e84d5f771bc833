"""A person's or an address's answer, as `optout-sync person` shows it, read from the read
models (per-person state, mailbox index, audit trail) in one consistent read — no aggregate is
replayed. The clear address is joined from the store's erasable table at read time only.
"""

from __future__ import annotations

from datetime import datetime

from domain.identity import aggregate_id, is_address
from domain.rule import Mark
from projections.audit_trail import AUDIT
from projections.mailbox_index import CARRIERS
from projections.per_person import PERSON_STATE, Fold, decode_fold
from projections.person_state import (
    AddressLookup,
    AddressView,
    HistoryEntry,
    MarkView,
    PersonState,
)
from projections.views import Select, view

VIEWS = (view(PERSON_STATE), view(AUDIT), view(CARRIERS))
_HISTORY = (
    "change, source, actor, channel, occurred_at, recorded_at, event_id, reason, mailbox, "
    "record_id, written_id, field"
)


def look_up(select: Select, key: str, addresses_table: str) -> PersonState | AddressLookup | None:
    """The answer for a person key, or for an address key with every person carrying it."""
    if not is_address(key):
        return _state(select, key, addresses_table)
    address = _state(select, key, addresses_table)
    if address is None:
        return None
    persons = [_state(select, carrier, addresses_table) for carrier in address.carried_by]
    return AddressLookup(address=address, persons=[p for p in persons if p is not None])


def _state(select: Select, key: str, addresses_table: str) -> PersonState | None:
    found = _row(select, key)
    carried_by = (
        [
            r[0]
            for r in select(
                f"SELECT person_key FROM {view(CARRIERS)} WHERE mailbox = ? ORDER BY person_key",
                (key,),
            )
        ]
        if is_address(key)
        else []
    )
    if found is None:
        return None
    row, fold = found
    opted_out, opting = bool(row[3]), [m for m in str(row[6] or "").split(",") if m]
    if is_address(key):
        addresses = [
            AddressView(key=key, email=_email(select, addresses_table, key), opted_out=opted_out)
        ]
    else:
        addresses = [
            AddressView(
                key=mailbox,
                email=_email(select, addresses_table, mailbox),
                opted_out=mailbox in opting,
            )
            for mailbox in fold.mailboxes
        ]
    salesforce_id = fold.salesforce_id
    if salesforce_id is None and is_address(key):
        linked = [_row(select, carrier) for carrier in carried_by]
        salesforce_id = next(
            (f.salesforce_id for _, f in filter(None, linked) if f.salesforce_id), None
        )
    state = fold.state
    history = [
        HistoryEntry(
            change=r[0],
            source=r[1],
            actor=r[2],
            channel=r[3],
            occurred_at=_time(r[4]),
            recorded_at=_time(r[5]),
            event_id=r[6],
            reason=r[7],
            address=r[8],
            record_id=r[9],
            written_id=r[10],
            field=r[11],
        )
        for r in select(
            f"SELECT {_HISTORY} FROM {view(AUDIT)} WHERE person_key = ? ORDER BY position",
            (key,),
        )
    ]
    return PersonState(
        person_key=key,
        kind="address" if is_address(key) else "person",
        opted_out=opted_out,
        own_opted_out=fold.own.opted_out,
        latest_unsubscribe=_mark(state.unsubscribe),
        latest_removal=_mark(state.removal),
        opted_out_by_addresses=sorted(opting),
        addresses=addresses,
        carried_by=carried_by,
        salesforce_id=salesforce_id,
        pending_link=opted_out and salesforce_id is None,
        version=int(str(row[11])),
        history=history,
    )


def _row(select: Select, key: str) -> tuple[tuple[object, ...], Fold] | None:
    rows = select(
        f"SELECT * FROM {view(PERSON_STATE)} WHERE person_id = ?",
        (aggregate_id(key).hex,),
    )
    if not rows:
        return None
    return rows[0], decode_fold(str(rows[0][-1]))


def _email(select: Select, table: str, mailbox: str) -> str | None:
    found = select(f"SELECT email FROM {table} WHERE mailbox = ?", (mailbox,))
    return str(found[0][0]) if found and found[0][0] is not None else None


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text)


def _mark(mark: Mark | None) -> MarkView | None:
    if mark is None:
        return None
    return MarkView(occurred_at=mark.occurred_at, source=mark.source, event_id=str(mark.event_id))
