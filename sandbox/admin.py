"""The admin API under /__admin/: faults, sessions, API usage, call log, records; off unless enabled."""

from __future__ import annotations

from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from sandbox.errors import ApiError, not_found
from sandbox.org import SandboxOrg
from sandbox.rest import json_response
from sandbox.store import format_datetime, now


def convert_lead(org: SandboxOrg, lead_id: str, contact_id: str) -> dict[str, Any]:
    """Mark a lead converted into an existing contact, as Salesforce's lead conversion leaves it."""
    with org.store.lock:
        lead = org.store.locate(lead_id, "Lead")
        contact = org.store.locate(contact_id, "Contact")
        if lead is None or contact is None:
            raise ApiError(404, "NOT_FOUND", "lead or contact not found")
        org.store.apply(lead[1], {"IsConverted": True, "ConvertedContactId": contact[1]["Id"]})
        return org.store.render(lead[0], lead[1])


def state(org: SandboxOrg) -> dict[str, Any]:
    return {
        "records": org.store.count(),
        "api_usage": {"used": org.usage.used, "limit": org.usage.limit},
        "faults": org.faults.describe(),
        "calls": len(org.call_log),
        "bulk_jobs": {job_id: job.state for job_id, job in org.bulk.jobs.items()},
    }


async def _body(request: Request) -> Any:
    raw = await request.body()
    if not raw:
        return {}
    try:
        return msgspec.json.decode(raw)
    except msgspec.DecodeError:
        raise ApiError(400, "JSON_PARSER_ERROR", "admin requests take a JSON body") from None


async def dispatch(org: SandboxOrg, request: Request) -> Response:
    if not org.config.admin_enabled:
        raise ApiError(
            403, "ADMIN_DISABLED", "the admin API is off; start the sandbox with --enable-admin"
        )
    parts = [p for p in request.path_params["rest"].split("/") if p]
    method = request.method
    route = (method, *parts[:1])
    if route == ("GET", "state"):
        return json_response(state(org))
    if route == ("GET", "calls"):
        kind = request.query_params.get("kind", "api")
        calls = org.call_log.calls(
            None if kind == "all" else kind, request.query_params.get("path")
        )
        return json_response({"count": len(calls), "calls": [c.as_dict() for c in calls]})
    if route == ("DELETE", "calls"):
        org.call_log.clear()
        return Response(status_code=204)
    if route == ("GET", "faults"):
        return json_response(org.faults.describe())
    if route == ("POST", "faults"):
        body = await _body(request)
        try:
            for spec in body if isinstance(body, list) else [body]:
                org.faults.add(spec)
        except (ValueError, TypeError, AttributeError) as error:
            raise ApiError(400, "INVALID_FAULT", str(error)) from None
        return json_response(org.faults.describe(), 201)
    if route == ("DELETE", "faults"):
        org.faults.clear()
        return Response(status_code=204)
    if route == ("POST", "sessions") and parts[1:] == ["expire"]:
        body = await _body(request)
        return json_response({"expired": org.sessions.expire(body.get("session_id"))})
    if route == ("POST", "usage"):
        body = await _body(request)
        org.usage.reset(body.get("limit"))
        org.usage.used = int(body.get("used", 0))
        return json_response({"used": org.usage.used, "limit": org.usage.limit})
    if route == ("GET", "records") and len(parts) == 2:
        found = org.store.locate(parts[1])
        if found is None:
            raise not_found()
        return json_response(org.store.render(*found))
    if route == ("POST", "records") and len(parts) == 2:
        body = await _body(request)
        try:
            record = org.store.insert(parts[1], body)
        except ValueError as error:
            raise ApiError(400, "INVALID_RECORD", str(error)) from None
        return json_response(org.store.render(org.store.schema(parts[1]), record), 201)
    if route == ("POST", "leads") and len(parts) == 3 and parts[2] == "convert":
        body = await _body(request)
        return json_response(convert_lead(org, parts[1], str(body.get("contact_id", ""))))
    if route == ("POST", "snapshot"):
        saved = org.save_snapshot()
        return json_response({"saved": saved, "at": format_datetime(now())})
    raise not_found()
