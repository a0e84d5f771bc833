"""Bulk API 2.0 and paged SOQL reads for the nightly pass, through the adapter's one client.

Every call goes through `OrgClient.call` (metered, budgeted, the bounded re-login, the error
vocabulary). A query job is created, polled until it ends and read page by page (CSV); an update
job is created, given its CSV, closed, polled, and its failed rows read — the rows not failed of a
job that completed are its successes (the counts are checked, so no row goes unread). Only
`true` is ever written.
"""

from __future__ import annotations

import csv
import io
import json
import re
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import msgspec
from simple_salesforce import Salesforce
from simple_salesforce.format import format_soql

from adapters.salesforce_client import (
    OrgClient,
    RequestRefused,
    SalesforceUnavailable,
    UnexpectedResponse,
)
from domain.identity import RecordType, to_18

TERMINAL = ("JobComplete", "Failed", "Aborted")
# Polls of a job: each is an API call, so they start after a short pause and grow apart.
POLL_S = (0.2, 0.5, 1.0, 2.0, 5.0, 10.0)
JOB_TIMEOUT_S = 3600.0
REST_PAGE = 2000  # rows a REST query page carries


class JobFailed(SalesforceUnavailable):
    """A Bulk job ended Failed or Aborted as a whole (its `errorMessage` says why)."""


class BulkQueryResult(msgspec.Struct, frozen=True, kw_only=True):
    rows: list[dict[str, str]]
    started_at: datetime  # the job's createdDate: Salesforce's own clock when the read began


class RowFailure(msgspec.Struct, frozen=True, kw_only=True):
    record_id: str  # as sent (18 characters)
    code: str
    message: str


class BulkUpdateResult(msgspec.Struct, frozen=True, kw_only=True):
    job_id: str
    object_type: RecordType
    state: str
    succeeded: list[str]
    failed: list[RowFailure]
    unprocessed: list[str]  # rows a failed or aborted job never processed
    error_message: str | None = None
    answered_at: datetime


def parse_modstamp(raw: str) -> datetime:
    """Salesforce datetimes: `2026-01-01T00:00:00.000+0000` (REST) or `...000Z` (Bulk CSV)."""
    text = raw.strip()
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    elif len(text) > 5 and text[-5] in "+-" and text[-3] != ":":
        text = text[:-2] + ":" + text[-2:]
    return datetime.fromisoformat(text).astimezone(UTC)


def _raw(
    client: OrgClient,
    what: str,
    method: str,
    path: str,
    *,
    body: bytes | None = None,
    content_type: str = "application/json",
    accept: str = "application/json",
) -> Any:
    """One call under /services/data/vXX.X/jobs/: the requests.Response (raises on >= 300)."""

    def request(sf: Salesforce) -> Any:
        return sf._call_salesforce(  # the one raw call site: CSV in and out
            method,
            f"{sf.bulk2_url}{path}",
            name=what,
            data=body,
            headers={"Content-Type": content_type, "Accept": accept},
        )

    return client.call(what, request)


def _json(client: OrgClient, what: str, method: str, path: str, body: Any = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    return _raw(client, what, method, path, body=data).json()


def _wait(
    client: OrgClient, kind: str, job_id: str, sleep: Callable[[float], None]
) -> dict[str, Any]:
    started = time.monotonic()
    for attempt in range(10_000):
        sleep(POLL_S[min(attempt, len(POLL_S) - 1)])
        info: dict[str, Any] = _json(client, f"bulk {kind} job state", "GET", f"{kind}/{job_id}")
        if info.get("state") in TERMINAL:
            return info
        if time.monotonic() - started > JOB_TIMEOUT_S:
            break
    raise SalesforceUnavailable(f"bulk {kind} job {job_id} did not end in {JOB_TIMEOUT_S:.0f} s")


def _read_csv(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text, newline="")))


def bulk_query(
    client: OrgClient, soql: str, sleep: Callable[[float], None] = time.sleep
) -> BulkQueryResult:
    """Every row of a query, through one Bulk API 2.0 query job (created, polled, read by pages)."""
    job = _json(client, "bulk query", "POST", "query", {"operation": "query", "query": soql})
    info = _wait(client, "query", job["id"], sleep)
    if info["state"] != "JobComplete":
        raise JobFailed(
            f"bulk query job {job['id']} ended {info['state']}: {info.get('errorMessage', '')}",
            code="BULK_JOB_" + str(info["state"]).upper(),
        )
    rows: list[dict[str, str]] = []
    locator: str | None = None
    while True:
        path = f"query/{job['id']}/results" + (f"?locator={locator}" if locator else "")
        response = _raw(client, "bulk query results", "GET", path, accept="text/csv")
        rows.extend(_read_csv(response.text))
        locator = response.headers.get("Sforce-Locator")
        if not locator or locator == "null":
            break
    return BulkQueryResult(rows=rows, started_at=parse_modstamp(str(job["createdDate"])))


def query_rows(
    client: OrgClient, soql: str, *, most: int | None = None
) -> tuple[list[dict[str, Any]], int]:
    """(rows, totalSize) of a REST query, following pages; with `most`, stops after the first
    page when the total passes it (the caller then reads by Bulk instead)."""
    page = client.query_page("nightly read", soql, private=True)
    total = int(page.get("totalSize", 0))
    rows = list(page.get("records", []))
    if most is not None and total > most:
        return rows, total
    while not page.get("done", True) and page.get("nextRecordsUrl"):
        page = client.query_more("nightly read", page["nextRecordsUrl"], private=True)
        rows.extend(page.get("records", []))
    return rows, total


def bulk_update(
    client: OrgClient,
    object_type: RecordType,
    field: str,
    record_ids: Sequence[str],
    sleep: Callable[[float], None] = time.sleep,
) -> BulkUpdateResult:
    """Sets `field` to true on every record through one Bulk API 2.0 update job."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["Id", field])
    writer.writerows([record_id, "true"] for record_id in record_ids)
    job = _json(
        client,
        "bulk update",
        "POST",
        "ingest",
        {
            "object": str(object_type),
            "operation": "update",
            "contentType": "CSV",
            "lineEnding": "LF",
        },
    )
    job_id = str(job["id"])
    _raw(
        client,
        "bulk update upload",
        "PUT",
        f"ingest/{job_id}/batches",
        body=buffer.getvalue().encode(),
        content_type="text/csv",
    )
    _json(client, "bulk update close", "PATCH", f"ingest/{job_id}", {"state": "UploadComplete"})
    info = _wait(client, "ingest", job_id, sleep)
    answered_at = datetime.now(UTC)
    failed = [
        RowFailure(record_id=_sent_id(row), code=code, message=message)
        for row in _read_csv(
            _raw(
                client,
                "bulk failed rows",
                "GET",
                f"ingest/{job_id}/failedResults",
                accept="text/csv",
            ).text
        )
        for code, message in [_error(row.get("sf__Error", ""))]
    ]
    failed_ids = {failure.record_id for failure in failed}
    unprocessed: list[str] = []
    if info["state"] != "JobComplete":
        done = failed_ids | _succeeded_ids(client, job_id)
        unprocessed = [record_id for record_id in record_ids if record_id not in done]
    processed = int(info.get("numberRecordsProcessed", 0))
    if info["state"] == "JobComplete" and (
        processed != len(record_ids) or int(info.get("numberRecordsFailed", 0)) != len(failed)
    ):
        raise UnexpectedResponse(
            f"bulk update job {job_id}: {len(record_ids)} rows sent, {processed} processed, "
            f"{info.get('numberRecordsFailed')} failed, {len(failed)} failed rows returned"
        )
    skipped = failed_ids | set(unprocessed)
    return BulkUpdateResult(
        job_id=job_id,
        object_type=object_type,
        state=str(info["state"]),
        succeeded=[record_id for record_id in record_ids if record_id not in skipped],
        failed=failed,
        unprocessed=unprocessed,
        error_message=info.get("errorMessage"),
        answered_at=answered_at,
    )


def _succeeded_ids(client: OrgClient, job_id: str) -> set[str]:
    text = _raw(
        client,
        "bulk successful rows",
        "GET",
        f"ingest/{job_id}/successfulResults",
        accept="text/csv",
    ).text
    return {_sent_id(row) for row in _read_csv(text)}


def _sent_id(row: dict[str, str]) -> str:
    """The id as sent (our own `Id` column), else Salesforce's `sf__Id`."""
    raw = row.get("Id") or row.get("sf__Id") or ""
    try:
        return to_18(raw)
    except ValueError:
        return raw


def _error(text: str) -> tuple[str, str]:
    """`CODE:message:fields --` → (code, message)."""
    code, _, rest = text.partition(":")
    return (code.strip() or "UNKNOWN_ERROR"), rest.rstrip(" -").rstrip(":")


def field_missing_code(error: RequestRefused) -> bool:
    """A query naming a field the org does not have is refused with INVALID_FIELD."""
    return error.code == "INVALID_FIELD"


_API_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*(?!\n)$")
LOOKUP_BATCH = 300  # ids per `Id IN (...)` read: the URI stays far under its 16,384 bytes


def checked_soql(
    object_type: RecordType,
    field: str,
    *,
    since: datetime | None = None,
    ids: Sequence[str] | None = None,
) -> str:
    """Every Contact or Lead whose opt-out checkbox is checked (changed since, or among ids)."""
    if not _API_NAME.match(field):
        raise ValueError(f"not a Salesforce field API name: {field!r}")
    soql = format_soql(
        "SELECT Id, Email, SystemModstamp FROM {sobject:literal} WHERE {field:literal} = true",
        sobject=str(object_type),
        field=field,
    )
    if since is not None:
        soql += f" AND SystemModstamp >= {since.astimezone(UTC):%Y-%m-%dT%H:%M:%SZ}"
    if ids is not None:
        soql += format_soql(" AND Id IN {ids}", ids=list(ids))
    return soql


def converted_contacts(client: OrgClient, lead_ids: Sequence[str]) -> dict[str, str]:
    """ConvertedContactId of each converted Lead that has one (18-character ids both sides)."""
    found: dict[str, str] = {}
    for start in range(0, len(lead_ids), LOOKUP_BATCH):
        soql = format_soql(
            "SELECT Id, ConvertedContactId FROM Lead WHERE Id IN {ids}",
            ids=list(lead_ids[start : start + LOOKUP_BATCH]),
        )
        page = client.query_page("converted leads", soql, private=False)
        for row in page.get("records", []):
            if row.get("ConvertedContactId"):
                found[to_18(row["Id"])] = to_18(row["ConvertedContactId"])
    return found
