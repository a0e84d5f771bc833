"""Bulk API 2.0: ingest (update) and query jobs through their life cycle, CSV in and out."""

from __future__ import annotations

import asyncio
import base64
import csv
import io
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sandbox import soql
from sandbox.config import API_VERSION, SandboxConfig
from sandbox.errors import ApiError, RecordError
from sandbox.faults import FaultPlan
from sandbox.login import USER_ID
from sandbox.store import RecordStore, format_datetime, make_id, now

DELIMITERS = {
    "COMMA": ",",
    "TAB": "\t",
    "PIPE": "|",
    "SEMICOLON": ";",
    "CARET": "^",
    "BACKQUOTE": "`",
}
ENDINGS = {"LF": "\n", "CRLF": "\r\n"}
TERMINAL = ("JobComplete", "Failed", "Aborted")


@dataclass
class Job:
    id: str
    operation: str
    object: str
    column_delimiter: str
    line_ending: str
    is_query: bool
    state: str = "Open"
    created: datetime = field(default_factory=now)
    modstamp: datetime = field(default_factory=now)
    query: soql.Query | None = None
    data: bytes | None = None
    header: list[str] = field(default_factory=list)
    successes: list[list[str]] = field(default_factory=list)
    failures: list[list[str]] = field(default_factory=list)
    unprocessed: list[list[str]] = field(default_factory=list)
    rows: list[list[str]] = field(default_factory=list)  # query results, header excluded
    processed: int = 0
    failed: int = 0
    error_message: str | None = None
    processing_ms: int = 0

    def info(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "operation": self.operation,
            "object": self.object,
            "createdById": USER_ID,
            "createdDate": format_datetime(self.created),
            "systemModstamp": format_datetime(self.modstamp),
            "state": self.state,
            "concurrencyMode": "Parallel",
            "contentType": "CSV",
            "apiVersion": float(API_VERSION),
            "jobType": "V2Query" if self.is_query else "V2Ingest",
            "lineEnding": self.line_ending,
            "columnDelimiter": self.column_delimiter,
            "numberRecordsProcessed": self.processed,
            "retries": 0,
            "totalProcessingTime": self.processing_ms,
        }
        if not self.is_query:
            out.update(
                numberRecordsFailed=self.failed,
                apiActiveProcessingTime=self.processing_ms,
                apexProcessingTime=0,
            )
        if self.error_message:
            out["errorMessage"] = self.error_message
        return out

    def set_state(self, state: str) -> None:
        self.state = state
        self.modstamp = now()

    def to_csv(self, header: list[str], rows: list[list[str]]) -> str:
        buffer = io.StringIO()
        writer = csv.writer(
            buffer,
            delimiter=DELIMITERS[self.column_delimiter],
            lineterminator=ENDINGS[self.line_ending],
        )
        writer.writerow(header)
        writer.writerows(rows)
        return buffer.getvalue()


def _csv_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return format_datetime(value).replace("+0000", "Z")
    return str(value)


class BulkJobs:
    def __init__(self, config: SandboxConfig, store: RecordStore, faults: FaultPlan) -> None:
        self.config, self.store, self.faults = config, store, faults
        self.jobs: dict[str, Job] = {}
        self._serial = 0
        self._tasks: set[asyncio.Task[None]] = set()

    def _new_id(self) -> str:
        self._serial += 1
        return make_id("750", self._serial)

    def job(self, job_id: str, is_query: bool) -> Job:
        job = self.jobs.get(job_id) or self.jobs.get(job_id[:15] + "AAA")
        if job is None or job.is_query != is_query:
            raise ApiError(404, "NOT_FOUND", "The requested resource does not exist")
        return job

    def create(self, body: dict[str, Any], is_query: bool) -> Job:
        operation = body.get("operation")
        delimiter, ending = body.get("columnDelimiter", "COMMA"), body.get("lineEnding", "LF")
        if delimiter not in DELIMITERS or ending not in ENDINGS:
            raise ApiError(
                400, "INVALIDJOB", "InvalidJob : columnDelimiter or lineEnding is not valid"
            )
        if is_query:
            if operation not in ("query", "queryAll"):
                raise ApiError(400, "INVALIDJOB", f"InvalidJob : Invalid operation: {operation}")
            parsed = soql.parse(str(body.get("query", "")), self.store.find_schema)
            if parsed.count_only:
                raise ApiError(
                    400,
                    "INVALIDJOB",
                    "InvalidJob : Aggregate queries are not supported by Bulk API 2.0",
                )
            job = Job(
                self._new_id(),
                operation,
                parsed.sobject.name,
                delimiter,
                ending,
                True,
                "UploadComplete",
                query=parsed,
            )
            self._schedule(self._run_query(job))
        else:
            if operation != "update":
                raise ApiError(
                    400,
                    "FEATURENOTENABLED",
                    f"The sandbox supports the update operation only, not {operation}",
                )
            schema = self.store.find_schema(str(body.get("object", "")))
            if schema is None:
                raise ApiError(
                    400,
                    "INVALIDENTITY",
                    f"InvalidEntity : Entity '{body.get('object')}' is not supported by the Bulk API.",
                )
            if body.get("contentType", "CSV") != "CSV":
                raise ApiError(400, "INVALIDJOB", "InvalidJob : contentType must be CSV")
            job = Job(self._new_id(), "update", schema.name, delimiter, ending, False)
        self.jobs[job.id] = job
        return job

    def upload(self, job: Job, data: bytes) -> None:
        if job.state != "Open" or job.data is not None:
            raise ApiError(
                409, "INVALIDJOBSTATE", "Job data can only be uploaded once, to an Open job"
            )
        if not data:
            raise ApiError(400, "INVALIDJOB", "InvalidJob : the upload is empty")
        job.data = data

    def change_state(self, job: Job, state: Any) -> None:
        allowed = {"UploadComplete": ("Open",), "Aborted": ("Open", "UploadComplete", "InProgress")}
        if (
            state not in allowed
            or job.state not in allowed[state]
            or (job.is_query and state != "Aborted")
        ):
            raise ApiError(
                409, "INVALIDJOBSTATE", f"Can't change the job state from {job.state} to {state}"
            )
        if state == "UploadComplete" and job.data is None:
            job.set_state("Failed")
            job.error_message = "InvalidBatch : No data was uploaded to the job"
            return
        job.set_state(state)
        if state == "Aborted":
            return
        self._schedule(self._run_ingest(job))

    def delete(self, job: Job) -> None:
        if job.state not in ("UploadComplete", *TERMINAL):
            raise ApiError(409, "INVALIDJOBSTATE", f"Can't delete a job in state {job.state}")
        del self.jobs[job.id]

    def results(self, job: Job, kind: str) -> str:
        if job.state not in TERMINAL:
            raise ApiError(
                409, "INVALIDJOBSTATE", f"Results are not available while the job is {job.state}"
            )
        if kind == "successfulresults":
            return job.to_csv(["sf__Id", "sf__Created", *job.header], job.successes)
        if kind == "failedresults":
            return job.to_csv(["sf__Id", "sf__Error", *job.header], job.failures)
        return job.to_csv(job.header, job.unprocessed) if job.header else ""

    def query_page(
        self, job: Job, locator: str | None, max_records: int | None
    ) -> tuple[str, str, int]:
        """(CSV page, next locator or 'null', records in the page)."""
        if job.state != "JobComplete":
            raise ApiError(
                409, "INVALIDJOBSTATE", f"Results are not available while the job is {job.state}"
            )
        try:
            start = int(base64.b64decode(locator + "==").decode()) if locator else 0
        except ValueError:
            raise ApiError(400, "INVALIDLOCATOR", f"Invalid locator: {locator}") from None
        size = max_records or len(job.rows) or 1
        page = job.rows[start : start + size]
        end = start + len(page)
        following = (
            base64.b64encode(str(end).encode()).decode().rstrip("=")
            if end < len(job.rows)
            else "null"
        )
        assert job.query is not None
        return job.to_csv(job.query.fields, page), following, len(page)

    def _schedule(self, work: Any) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run_query(self, job: Job) -> None:
        await asyncio.sleep(0)
        started = time.perf_counter()
        job.set_state("InProgress")
        assert job.query is not None
        with self.store.lock:
            matches = job.query.run(list(self.store.records[job.object].values()))
            job.rows = [[_csv_value(rec.get(name)) for name in job.query.fields] for rec in matches]
        job.processed = len(job.rows)
        job.processing_ms = int((time.perf_counter() - started) * 1000)
        if job.state == "InProgress":
            job.set_state("JobComplete")

    async def _run_ingest(self, job: Job) -> None:
        await asyncio.sleep(0)
        started = time.perf_counter()
        job.set_state("InProgress")
        assert job.data is not None
        text = job.data.decode("utf-8-sig")
        reader = csv.reader(
            io.StringIO(text, newline=""), delimiter=DELIMITERS[job.column_delimiter]
        )
        job.header = next(reader, [])
        rows = [row for row in reader if row]
        schema = self.store.schema(job.object)
        unknown = [name for name in job.header if schema.field(name) is None]
        if unknown or not job.header:
            job.error_message = (
                f"InvalidBatch : Field name not found : {unknown[0] if unknown else ''}"
            )
            job.unprocessed = rows
            job.set_state("Failed")
            return
        if self.faults.job_fails(job.object):
            job.error_message = (
                "InternalServerError : the job failed (sandbox fault bulk_job_failed)"
            )
            job.unprocessed = rows
            job.set_state("Failed")
            return
        columns = [schema.by_lower[name.lower()].name for name in job.header]
        chunk = self.config.bulk_chunk_rows
        for offset in range(0, len(rows), chunk):
            if job.state != "InProgress":  # aborted while running: the rest stays unprocessed
                job.unprocessed = rows[offset:]
                break
            with self.store.lock:
                stamp = now()
                for row in rows[offset : offset + chunk]:
                    self._update_row(job, schema, columns, row, stamp)
            await asyncio.sleep(0)  # let polling requests in between chunks
        job.processing_ms = int((time.perf_counter() - started) * 1000)
        if job.state == "InProgress":
            job.set_state("JobComplete")

    def _update_row(
        self, job: Job, schema: Any, columns: list[str], row: list[str], stamp: datetime
    ) -> None:
        job.processed += 1
        values = dict(zip(columns, row, strict=False))
        raw_id = values.pop("Id", "")
        record_id = raw_id
        try:
            if not raw_id:
                raise RecordError("MISSING_ARGUMENT", "Id not specified in an update call")
            found = self.store.locate(raw_id, schema.name)
            if found is None:
                raise RecordError("INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id")
            record = found[1]
            record_id = record["Id"]
            # Bulk API: an empty cell leaves the field alone, #N/A clears it.
            changes = {k: (None if v == "#N/A" else v) for k, v in values.items() if v != ""}
            try:
                self.store.validate(schema, changes)
            except ApiError as error:
                raise RecordError(error.code, error.message, error.fields) from None
            typed = self.store.prepare(schema, record, changes)
            if self.faults.row_locked(record["Id"]):
                raise RecordError(
                    "UNABLE_TO_LOCK_ROW",
                    f"unable to obtain exclusive access to this record or 1 records: {record['Id']}",
                )
            self.store.apply(record, typed, stamp)
            job.successes.append([record["Id"], "false", *row])
        except RecordError as error:
            job.failed += 1
            job.failures.append([record_id, error.as_bulk_error(), *row])
