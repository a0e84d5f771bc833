"""The REST data API under /services/data/vXX.X/: records, describe, query, collections, limits, jobs."""

from __future__ import annotations

import re
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from sandbox import soql
from sandbox.errors import ApiError, RecordError, not_found
from sandbox.ids import InvalidSalesforceId, to_18
from sandbox.org import SandboxOrg
from sandbox.schema import SObjectSchema
from sandbox.store import Record, now

_VERSION = re.compile(r"^v\d{2}\.\d$")
_RESULT_KINDS = {"successfulresults", "failedresults", "unprocessedrecords"}
_ROLLED_BACK = RecordError(
    "ALL_OR_NONE_OPERATION_ROLLED_BACK",
    "Record rolled back because not all records were valid and the request was using AllOrNone header",
)


def json_response(content: Any, status: int = 200) -> Response:
    return Response(
        msgspec.json.encode(content), status, media_type="application/json;charset=UTF-8"
    )


def csv_response(text: str, headers: dict[str, str] | None = None) -> Response:
    return Response(text.encode(), 200, headers=headers, media_type="text/csv")


def _not_allowed(method: str, allowed: str) -> ApiError:
    return ApiError(
        405, "METHOD_NOT_ALLOWED", f"HTTP Method '{method}' not allowed. Allowed are {allowed}"
    )


async def _json_body(request: Request) -> Any:
    try:
        return msgspec.json.decode(await request.body())
    except msgspec.DecodeError as error:
        raise ApiError(400, "JSON_PARSER_ERROR", f"Unexpected character: {error}") from None


class DataApi:
    def __init__(self, org: SandboxOrg) -> None:
        self.org = org
        self.store = org.store

    async def dispatch(self, request: Request) -> Response:
        parts = [p for p in request.path_params.get("rest", "").split("/") if p]
        method = request.method
        if not parts:
            return json_response(
                [{"label": "Winter '24", "url": "/services/data/v59.0", "version": "59.0"}]
            )
        if not _VERSION.match(parts[0]):
            raise not_found()
        version, head, rest = parts[0][1:], (parts[1] if len(parts) > 1 else ""), parts[2:]
        if head == "limits" and not rest:
            if method != "GET":
                raise _not_allowed(method, "GET")
            return self.limits()
        if head in ("query", "queryAll") and method == "GET":
            return self.query(request, version, rest)
        if head == "sobjects":
            return await self.sobjects(request, rest)
        if head == "composite" and rest == ["sobjects"]:
            if method != "PATCH":
                raise _not_allowed(method, "PATCH")
            return self.collection_update(await _json_body(request))
        if head == "jobs" and rest and rest[0] in ("ingest", "query"):
            return await self.jobs(request, rest[0] == "query", rest[1:])
        raise not_found()

    def limits(self) -> Response:
        usage = self.org.usage
        return json_response(
            {
                "DailyApiRequests": {
                    "Max": usage.limit,
                    "Remaining": max(usage.limit - usage.used, 0),
                },
                "DailyBulkApiBatches": {"Max": 15000, "Remaining": 15000},
                "DailyBulkV2QueryJobs": {"Max": 10000, "Remaining": 10000},
                "DailyBulkV2QueryFileStorageMB": {"Max": 1048576, "Remaining": 1048576},
                "DataStorageMB": {"Max": 1024, "Remaining": 1000},
            }
        )

    # --- query ---------------------------------------------------------------------------
    def query(self, request: Request, version: str, rest: list[str]) -> Response:
        if rest:
            locator, _, offset = rest[0].partition("-")
            cursor = self.org.cursors.get(locator)
            if cursor is None or not offset.isdigit():
                raise ApiError(400, "INVALID_QUERY_LOCATOR", "invalid query locator")
            query, rows = cursor
            return self._page(version, query, rows, int(offset), locator)
        source = request.query_params.get("q")
        if not source:
            raise ApiError(400, "MALFORMED_QUERY", "A query string has to be specified")
        query = soql.parse(source, self.store.find_schema)
        with self.store.lock:
            rows = query.run(list(self.store.records[query.sobject.name].values()))
        if query.count_only:
            return json_response({"totalSize": len(rows), "done": True, "records": []})
        locator = (
            self.org.cursors.open(query, rows)
            if len(rows) > self.org.config.query_page_size
            else ""
        )
        return self._page(version, query, rows, 0, locator)

    def _page(
        self, version: str, query: soql.Query, rows: list[Record], start: int, locator: str
    ) -> Response:
        size = self.org.config.query_page_size
        end = min(start + size, len(rows))
        with self.store.lock:
            records = [self.store.render(query.sobject, r, query.fields) for r in rows[start:end]]
        body: dict[str, Any] = {"totalSize": len(rows), "done": end >= len(rows)}
        if end < len(rows):
            body["nextRecordsUrl"] = f"/services/data/v{version}/query/{locator}-{end}"
        body["records"] = records
        return json_response(body)

    # --- sObject rows ----------------------------------------------------------------------
    async def sobjects(self, request: Request, rest: list[str]) -> Response:
        method = request.method
        if not rest:
            if method != "GET":
                raise _not_allowed(method, "GET,HEAD")
            described = [
                {k: v for k, v in s.describe().items() if k != "fields"}
                for s in self.store.schemas.values()
            ]
            return json_response({"encoding": "UTF-8", "maxBatchSize": 200, "sobjects": described})
        schema = self.store.schema(rest[0])
        if len(rest) == 1:
            if method != "GET":
                raise _not_allowed(method, "GET,HEAD,POST")
            summary = {k: v for k, v in schema.describe().items() if k != "fields"}
            return json_response({"objectDescribe": summary, "recentItems": []})
        if rest[1:] == ["describe"]:
            return json_response(schema.describe())
        if len(rest) != 2:
            raise not_found()
        if method == "GET":
            return self.get_record(request, schema, rest[1])
        if method == "PATCH":
            return self.update_record(schema, rest[1], await _json_body(request))
        raise _not_allowed(method, "GET,PATCH,HEAD")

    def _find(self, schema: SObjectSchema, raw_id: str) -> Record:
        try:
            to_18(raw_id)
        except InvalidSalesforceId:
            raise ApiError(
                404,
                "NOT_FOUND",
                f"Provided external ID field does not exist or is not accessible: {raw_id}",
            ) from None
        found = self.store.locate(raw_id, schema.name)
        if found is None:
            raise not_found()
        return found[1]

    def get_record(self, request: Request, schema: SObjectSchema, raw_id: str) -> Response:
        wanted = request.query_params.get("fields")
        with self.store.lock:
            record = self._find(schema, raw_id)
            fields = None
            if wanted:
                fields = []
                for name in wanted.split(","):
                    spec = schema.field(name.strip())
                    if spec is None:
                        raise ApiError(
                            400,
                            "INVALID_FIELD",
                            f"No such column '{name.strip()}' on sobject of type {schema.name}",
                        )
                    fields.append(spec.name)
            return json_response(self.store.render(schema, record, fields))

    def update_record(self, schema: SObjectSchema, raw_id: str, body: Any) -> Response:
        if not isinstance(body, dict):
            raise ApiError(400, "JSON_PARSER_ERROR", "The request body must be a JSON object")
        body.pop("attributes", None)
        body.pop("Id", None)
        with self.store.lock:
            record = self._find(schema, raw_id)
            changes = self.store.validate(schema, body)
            try:
                typed = self.store.prepare(schema, record, changes)
                self._check_lock(record["Id"])
            except RecordError as error:
                raise error.as_api_error() from None
            self.store.apply(record, typed)
        return Response(status_code=204)

    def _check_lock(self, record_id: str) -> None:
        if self.org.faults.row_locked(record_id):
            raise RecordError(
                "UNABLE_TO_LOCK_ROW",
                f"unable to obtain exclusive access to this record or 1 records: {record_id}",
            )

    # --- sObject Collections --------------------------------------------------------------
    def collection_update(self, body: Any) -> Response:
        records = body.get("records") if isinstance(body, dict) else None
        if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
            raise ApiError(400, "JSON_PARSER_ERROR", "Expected a records list of objects")
        if len(records) > self.org.config.collection_limit:
            raise ApiError(
                400,
                "EXCEEDED_ID_LIMIT",
                f"record limit reached. cannot submit more than {self.org.config.collection_limit} records into this call",
            )
        all_or_none = bool(body.get("allOrNone", False))
        # Deserialising the whole request first: an unknown field or type fails the call, as in Salesforce.
        planned: list[tuple[SObjectSchema, dict[str, Any], str]] = []
        for item in records:
            attributes = item.get("attributes") or {}
            schema = self.store.find_schema(str(attributes.get("type", "")))
            if schema is None:
                raise ApiError(
                    400,
                    "INVALID_TYPE",
                    "Each record needs attributes.type naming a supported sObject",
                )
            values = {k: v for k, v in item.items() if k not in ("attributes", "id", "Id")}
            planned.append(
                (
                    schema,
                    self.store.validate(schema, values),
                    str(item.get("id") or item.get("Id") or ""),
                )
            )
        results: list[dict[str, Any]] = []
        writes: list[tuple[Record, dict[str, Any]]] = []
        with self.store.lock:
            for schema, changes, raw_id in planned:
                result, write = self._plan_row(schema, changes, raw_id)
                results.append(result)
                if write is not None:
                    writes.append(write)
            if all_or_none and len(writes) < len(planned):
                for result in results:
                    if result["success"]:
                        result.update(success=False, errors=[_ROLLED_BACK.as_result()])
                return json_response(results)
            stamp = now()
            for record, typed in writes:
                self.store.apply(record, typed, stamp)
        return json_response(results)

    def _plan_row(
        self, schema: SObjectSchema, changes: dict[str, Any], raw_id: str
    ) -> tuple[dict[str, Any], tuple[Record, dict[str, Any]] | None]:
        try:
            if not raw_id:
                raise RecordError("MISSING_ARGUMENT", "Id not specified in an update call")
            try:
                to_18(raw_id)
            except InvalidSalesforceId:
                raise RecordError(
                    "MALFORMED_ID",
                    f"{schema.label} ID: id value of incorrect type: {raw_id}",
                    ["Id"],
                ) from None
            found = self.store.locate(raw_id, schema.name)
            if found is None:
                raise RecordError("INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id")
            record = found[1]
        except RecordError as error:
            return {"success": False, "errors": [error.as_result()]}, None
        try:
            typed = self.store.prepare(schema, record, changes)
            self._check_lock(record["Id"])
        except RecordError as error:
            return {"id": record["Id"], "success": False, "errors": [error.as_result()]}, None
        return {"id": record["Id"], "success": True, "errors": []}, (record, typed)

    # --- Bulk API 2.0 -----------------------------------------------------------------------
    async def jobs(self, request: Request, is_query: bool, rest: list[str]) -> Response:
        method, bulk = request.method, self.org.bulk
        if not rest:
            if method == "POST":
                job = bulk.create(await _json_body(request), is_query)
                info = job.info()
                if not is_query:
                    info["contentUrl"] = (
                        f"services/data/v{request.path_params['rest'].split('/')[0][1:]}/jobs/ingest/{job.id}/batches"
                    )
                return json_response(info)
            if method == "GET":
                jobs = [j.info() for j in bulk.jobs.values() if j.is_query == is_query]
                return json_response({"done": True, "records": jobs, "nextRecordsUrl": None})
            raise _not_allowed(method, "GET,POST")
        job = bulk.job(rest[0], is_query)
        tail = [p.lower() for p in rest[1:]]
        if not tail:
            if method == "GET":
                return json_response(job.info())
            if method == "PATCH":
                body = await _json_body(request)
                bulk.change_state(job, body.get("state") if isinstance(body, dict) else None)
                return json_response(job.info())
            if method == "DELETE":
                bulk.delete(job)
                return Response(status_code=204)
            raise _not_allowed(method, "GET,PATCH,DELETE")
        if tail == ["batches"] and not is_query:
            if method != "PUT":
                raise _not_allowed(method, "PUT")
            bulk.upload(job, await request.body())
            return Response(status_code=201)
        if len(tail) == 1 and tail[0] in _RESULT_KINDS and not is_query and method == "GET":
            return csv_response(bulk.results(job, tail[0]))
        if tail == ["results"] and is_query and method == "GET":
            raw_max = request.query_params.get("maxRecords")
            if raw_max is not None and (not raw_max.isdigit() or int(raw_max) < 1):
                raise ApiError(400, "INVALIDPARAMETER", "maxRecords must be a positive integer")
            text, locator, count = bulk.query_page(
                job, request.query_params.get("locator"), int(raw_max) if raw_max else None
            )
            return csv_response(
                text, {"Sforce-Locator": locator, "Sforce-NumberOfRecords": str(count)}
            )
        raise not_found()
