"""The ASGI application: login routes, the data API, the admin API, and the gate in front of them
(call log, session check, API allowance, Sforce-Limit-Info, injected faults)."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sandbox import admin, login
from sandbox.errors import ApiError, limit_exceeded, not_found, session_invalid
from sandbox.org import Call, SandboxOrg
from sandbox.rest import DataApi, json_response

log = logging.getLogger(__name__)
_DATA_PREFIX = "/services/data/"
_FAILURES = {
    "invalid_session_id": session_invalid,
    "request_limit_exceeded": limit_exceeded,
    "server_unavailable": lambda: ApiError(
        503, "SERVER_UNAVAILABLE", "Server temporarily unavailable, please try again later"
    ),
}


def _base_url(request: Request) -> str:
    return f"https://{request.headers.get('host', request.url.netloc)}"


def _error_response(error: ApiError) -> Response:
    return json_response(error.body(), error.status)


def _too_long(scope: Scope, limit: int) -> Response | None:
    """Salesforce's edge: URI over the limit is 414, URI plus headers over it 431 (never counted)."""
    uri = len(scope.get("raw_path") or scope["path"].encode())
    if scope.get("query_string"):
        uri += 1 + len(scope["query_string"])
    if uri > limit:
        return Response("URI Too Long", 414, media_type="text/plain")
    headers = sum(len(name) + len(value) + 4 for name, value in scope["headers"])  # "k: v\r\n"
    if uri + headers > limit:
        return Response("Request Header Fields Too Large", 431, media_type="text/plain")
    return None


def _kind(path: str) -> str:
    if path.startswith(_DATA_PREFIX):
        return "api"
    return "admin" if path.startswith("/__admin") else "login"


class Gate:
    """Outermost ASGI layer: everything a real org does before and after routing an API call."""

    def __init__(self, app: ASGIApp, org: SandboxOrg) -> None:
        self.app = app
        self.org = org

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        path, method = scope["path"], scope["method"]
        kind = _kind(path)
        status, logged = 0, False

        def log_call() -> None:
            nonlocal logged
            if not logged:
                logged = True
                duration = (time.perf_counter() - started) * 1000
                self.org.call_log.add(Call(method, path, status, duration, kind, time.time()))

        async def send_with_usage(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                if kind == "api":
                    message["headers"] = [
                        *message.get("headers", []),
                        (b"sforce-limit-info", self.org.usage.header()),
                    ]
                log_call()  # before the response leaves, so a client never sees an unlogged call
            await send(message)

        try:
            too_long = _too_long(scope, self.org.config.uri_limit) if kind == "api" else None
            if too_long is not None:
                kind = "edge"  # refused before the API: no usage counted, no Sforce-Limit-Info
                await too_long(scope, receive, send_with_usage)
                return
            refusal = (
                await self._refusal(scope, receive, kind, method, path) if kind == "api" else None
            )
            if refusal is not None and refusal != "drop":
                await _error_response(refusal)(scope, receive, send_with_usage)
            elif refusal is None:
                await self.app(scope, receive, send_with_usage)
        finally:
            log_call()

    async def _refusal(
        self, scope: Scope, receive: Receive, kind: str, method: str, path: str
    ) -> Any:
        """None to serve the call, an ApiError to answer with, or 'drop' after closing the socket."""
        delay, failure = self.org.faults.on_request(method, path)
        if delay:
            await asyncio.sleep(delay)
        if failure == "drop_connection":
            await _drop(receive)
            return "drop"
        token = ""
        for name, value in scope["headers"]:
            if name == b"authorization":
                token = value.decode("latin-1").partition(" ")[2].strip()
                break
        if not self.org.sessions.valid(token):
            return session_invalid()
        if failure is not None:
            return _FAILURES[failure]()
        if not self.org.usage.take():
            return limit_exceeded()
        return None


async def _drop(receive: Receive) -> None:
    """Close the client's socket without a response, as a dying load balancer does."""
    transport = getattr(getattr(receive, "__self__", None), "transport", None)
    if transport is None:
        raise RuntimeError("dropped connection: server protocol does not expose its transport")
    transport.close()
    # Wait for uvicorn to notice the disconnect, so it does not answer with a 500 instead.
    while (await receive())["type"] != "http.disconnect":
        pass


def build_app(org: SandboxOrg) -> ASGIApp:
    data = DataApi(org)

    async def soap(request: Request) -> Response:
        status, envelope = login.soap_login(
            org.config, org.sessions, await request.body(), _base_url(request)
        )
        return Response(envelope, status, media_type="text/xml; charset=utf-8")

    async def oauth(request: Request) -> Response:
        status, body = login.oauth_token(
            org.config,
            org.sessions,
            await request.body(),
            request.headers.get("authorization"),
            _base_url(request),
        )
        return json_response(body, status)

    async def data_api(request: Request) -> Response:
        try:
            return await data.dispatch(request)
        except ApiError as error:
            return _error_response(error)

    async def admin_api(request: Request) -> Response:
        try:
            return await admin.dispatch(org, request)
        except ApiError as error:
            return _error_response(error)

    async def fallback(request: Request) -> Response:
        return _error_response(not_found())

    every = ["GET", "POST", "PATCH", "PUT", "DELETE", "HEAD"]
    app = Starlette(
        routes=[
            Route("/services/data/{rest:path}", data_api, methods=every),
            Route("/services/data", data_api, methods=every),
            # simple-salesforce logs in at https://{domain}.salesforce.com/...; a domain such as
            # "127.0.0.1:PORT/sandbox" turns that into a path prefix on this server.
            Route("/services/Soap/u/{version}", soap, methods=["POST"]),
            Route("/{prefix:path}/services/Soap/u/{version}", soap, methods=["POST"]),
            Route("/services/oauth2/token", oauth, methods=["POST"]),
            Route("/{prefix:path}/services/oauth2/token", oauth, methods=["POST"]),
            Route("/__admin/{rest:path}", admin_api, methods=every),
            Route("/{rest:path}", fallback, methods=every),
        ]
    )
    return Gate(app, org)
