"""Pushing opt-outs: sObject Collections updates, every per-record result checked and classified.

Only `true` is ever written. A call carries at most 200 records (`allOrNone=false`, so one bad
record does not roll back the others); a 200 response can hold failed records, so each result is
read. A converted Lead cannot be written: its ConvertedContactId is looked up and written instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import msgspec
from simple_salesforce.format import format_soql

from adapters.salesforce_client import (
    OrgClient,
    RequestRefused,
    SalesforceFailure,
    UnexpectedResponse,
)
from domain.identity import InvalidSalesforceId, RecordType, to_18
from domain.opt_out_field import OptOutField

COLLECTION_LIMIT = 200  # records per sObject Collections call, fixed by Salesforce
CONVERTED_LEAD = "CANNOT_UPDATE_CONVERTED_LEAD"
_RETRY_CODES = frozenset({"UNABLE_TO_LOCK_ROW"})
_LIMIT_CODES = frozenset({"REQUEST_LIMIT_EXCEEDED"})


class PushOutcome(StrEnum):
    ACCEPTED = "accepted"  # Salesforce wrote the checkbox
    RETRY = "retry"  # transient (UNABLE_TO_LOCK_ROW): write it again after a back-off
    CONVERTED_LEAD = "converted_lead"  # the Lead is converted; its contact was written instead
    REFUSED = "refused"  # permanent: NOT_FOUND, ENTITY_IS_DELETED, INVALID_FIELD, ...
    LIMIT = "limit"  # REQUEST_LIMIT_EXCEEDED on this record


class OptOutTarget(msgspec.Struct, frozen=True, kw_only=True):
    """The chosen opt-out field as found in the org: its API name on Contact and on Lead."""

    choice: OptOutField
    contact: str
    lead: str

    def on(self, object_type: str) -> str:
        return self.contact if object_type == RecordType.CONTACT else self.lead


class OptOutWrite(msgspec.Struct, frozen=True, kw_only=True):
    """Set the target checkbox to true on one Contact or Lead."""

    record_id: str
    object_type: RecordType
    target: OptOutTarget

    @property
    def field(self) -> str:
        return self.target.on(self.object_type)


class PushResult(msgspec.Struct, frozen=True, kw_only=True):
    """What Salesforce did with one write; `push_opt_outs` returns one per write, in order."""

    record_id: str  # the record asked for, as given
    object_type: RecordType
    field: str  # the API name written (on `written_id`'s object)
    outcome: PushOutcome
    accepted: bool
    written_id: str | None = None  # the record written: record_id (18 chars), or the contact
    converted_contact_id: str | None = None  # set when the record is a converted Lead
    error_code: str | None = None  # Salesforce's statusCode/errorCode
    message: str | None = None
    answered_at: datetime | None = None  # when Salesforce's answer arrived (proof of acceptance)


class _Row(msgspec.Struct, frozen=True):
    """One per-record answer of a collections call."""

    id: str | None
    success: bool
    code: str | None
    message: str | None
    at: datetime


def collection_body(writes: Sequence[OptOutWrite]) -> dict[str, Any]:
    """The `PATCH composite/sobjects` body: each record's checkbox set to true, nothing else."""
    return {
        "allOrNone": False,
        "records": [
            {"attributes": {"type": str(w.object_type)}, "id": w.record_id, w.field: True}
            for w in writes
        ],
    }


def classify(code: str | None) -> PushOutcome:
    """A per-record error code → what to do about it."""
    if code is None:
        return PushOutcome.ACCEPTED
    if code in _RETRY_CODES:
        return PushOutcome.RETRY
    if code in _LIMIT_CODES:
        return PushOutcome.LIMIT
    if code == CONVERTED_LEAD:
        return PushOutcome.CONVERTED_LEAD
    return PushOutcome.REFUSED


def _key(write: OptOutWrite) -> tuple[str, str, str]:
    try:
        record_id = to_18(write.record_id)
    except InvalidSalesforceId:
        record_id = write.record_id  # Salesforce answers MALFORMED_ID for it
    return (str(write.object_type), record_id, write.field)


def _send(client: OrgClient, writes: Sequence[OptOutWrite]) -> list[_Row]:
    """One collections call; a 400 for the whole call (e.g. INVALID_FIELD) refuses every record."""
    try:
        answer = client.rest(
            "push opt-outs", "PATCH", "composite/sobjects", json=collection_body(writes)
        )
    except RequestRefused as refused:
        if refused.status != 400:
            raise
        at = datetime.now(UTC)
        return [_Row(None, False, refused.code, refused.detail, at) for _ in writes]
    at = datetime.now(UTC)
    if not isinstance(answer, list) or len(answer) != len(writes):
        raise UnexpectedResponse(
            f"push opt-outs: {len(writes)} records sent, "
            f"{len(answer) if isinstance(answer, list) else 'no'} results received"
        )
    rows = []
    for result in answer:
        if not isinstance(result, dict) or not isinstance(result.get("success"), bool):
            raise UnexpectedResponse(f"push opt-outs: a result without success: {result!r}")
        errors = result.get("errors") or []
        first = errors[0] if errors and isinstance(errors[0], dict) else {}
        failed = not result["success"]
        rows.append(
            _Row(
                result.get("id"),
                result["success"],
                str(first.get("statusCode") or "UNKNOWN_ERROR") if failed else None,
                str(first.get("message", "")) if failed else None,
                at,
            )
        )
    return rows


def _result(write: OptOutWrite, row: _Row) -> PushResult:
    return PushResult(
        record_id=write.record_id,
        object_type=write.object_type,
        field=write.field,
        outcome=classify(row.code),
        accepted=row.success,
        written_id=row.id if row.success else None,
        error_code=row.code,
        message=row.message,
        answered_at=row.at,
    )


def _answer(write: OptOutWrite, result: PushResult) -> PushResult:
    """The result of the write's record, echoing the write as given (a duplicate's own id form)."""
    return msgspec.structs.replace(result, record_id=write.record_id, object_type=write.object_type)


def _converted_contacts(client: OrgClient, lead_ids: Sequence[str]) -> dict[str, str | None]:
    """ConvertedContactId of each converted Lead (18-character ids both sides)."""
    soql = format_soql("SELECT Id, ConvertedContactId FROM Lead WHERE Id IN {ids}", ids=lead_ids)
    page = client.query_page("converted leads", soql, private=False)
    found: dict[str, str | None] = {}
    for record in page.get("records", []):
        contact = record.get("ConvertedContactId")
        found[to_18(record["Id"])] = to_18(contact) if contact else None
    return found


def _through_contacts(
    client: OrgClient, leads: Sequence[tuple[OptOutWrite, _Row]]
) -> dict[tuple[str, str, str], PushResult]:
    """Writes each converted Lead's contact; a result naming both, keyed by the Lead's write."""
    contact_of = _converted_contacts(client, sorted({_key(w)[1] for w, _ in leads}))
    contact_writes: dict[tuple[str, str, str], OptOutWrite] = {}
    for write, _ in leads:
        contact = contact_of.get(_key(write)[1])
        if contact is not None:
            cw = OptOutWrite(record_id=contact, object_type=RecordType.CONTACT, target=write.target)
            contact_writes.setdefault(_key(cw), cw)
    unique = list(contact_writes.values())
    rows = (
        dict(zip((_key(w) for w in unique), _send(client, unique), strict=True)) if unique else {}
    )
    results = {}
    for write, lead_row in leads:
        contact = contact_of.get(_key(write)[1])
        if contact is None:
            results[_key(write)] = msgspec.structs.replace(
                _result(write, lead_row),
                outcome=PushOutcome.REFUSED,
                message="the Lead is converted and has no ConvertedContactId to write instead",
            )
            continue
        cw = OptOutWrite(record_id=contact, object_type=RecordType.CONTACT, target=write.target)
        row = rows[_key(cw)]
        results[_key(write)] = PushResult(
            record_id=write.record_id,
            object_type=write.object_type,
            field=cw.field,
            outcome=PushOutcome.CONVERTED_LEAD if row.success else classify(row.code),
            accepted=row.success,
            written_id=contact if row.success else None,
            converted_contact_id=contact,
            error_code=row.code,
            message=row.message,
            answered_at=row.at,
        )
    return results


def _push_collection(client: OrgClient, writes: Sequence[OptOutWrite]) -> list[PushResult]:
    """≤ 200 writes: one collections call, plus a lookup and a call for converted Leads."""
    unique: dict[tuple[str, str, str], OptOutWrite] = {}
    for write in writes:
        unique.setdefault(_key(write), write)  # one record twice in a call: write it once
    try:
        rows = dict(zip(unique, _send(client, list(unique.values())), strict=True))
    except SalesforceFailure as failure:
        failure.completed, failure.pending = (), tuple(writes)
        raise
    converted = [(w, rows[k]) for k, w in unique.items() if rows[k].code == CONVERTED_LEAD]
    by_key = {k: _result(w, rows[k]) for k, w in unique.items() if rows[k].code != CONVERTED_LEAD}
    if converted:
        try:
            by_key.update(_through_contacts(client, converted))
        except SalesforceFailure as failure:
            failure.completed = tuple(
                _answer(w, by_key[_key(w)]) for w in writes if _key(w) in by_key
            )
            failure.pending = tuple(w for w in writes if _key(w) not in by_key)
            raise
    return [_answer(w, by_key[_key(w)]) for w in writes]


def push_opt_outs(client: OrgClient, writes: Sequence[OptOutWrite]) -> list[PushResult]:
    """Sets the opt-out checkbox on every record, 200 a call; one result per write, in order.

    A failure of a whole call (SalesforceFailure) carries `completed` (the results already final)
    and `pending` (the writes still to do), so the caller keeps the former and retries the latter.
    """
    done: list[PushResult] = []
    for start in range(0, len(writes), COLLECTION_LIMIT):
        chunk = writes[start : start + COLLECTION_LIMIT]
        try:
            done.extend(_push_collection(client, chunk))
        except SalesforceFailure as failure:
            failure.completed = (*done, *failure.completed)
            failure.pending = (*failure.pending, *writes[start + COLLECTION_LIMIT :])
            raise
    return done
