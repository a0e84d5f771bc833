"""Starting and stopping a sandbox org: uvicorn over TLS in a background thread, or in the foreground."""

from __future__ import annotations

import asyncio
import logging
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import requests
import uvicorn
from simple_salesforce import Salesforce

from sandbox.admin import convert_lead
from sandbox.config import API_VERSION, SandboxConfig
from sandbox.org import Call, SandboxOrg
from sandbox.server import build_app
from sandbox.store import Record, RecordStore
from sandbox.tls import TlsFiles, make_tls


class _QuietIdleShutdown(logging.Filter):
    """Drops uvicorn's "Cancel 0 running task(s), timeout graceful shutdown exceeded".

    At shutdown uvicorn closes each idle keep-alive connection with a TLS close_notify and waits for
    the peer's; idle clients never answer, so the graceful timeout always lapses and uvicorn logs
    that ERROR although no request was cut short. Only the zero-task case is dropped: when requests
    really are cancelled (a count above 0) the error still shows.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return not (
            record.msg == "Cancel %s running task(s), timeout graceful shutdown exceeded"
            and record.args == (0,)
        )


_QUIET_IDLE_SHUTDOWN = _QuietIdleShutdown()


def _bind(host: str, port: int) -> socket.socket:
    # Bound before uvicorn starts, so port 0 yields a known ephemeral port up front. proto must be
    # IPPROTO_TCP: asyncio only sets TCP_NODELAY on such sockets (else Nagle adds 40 ms a response).
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


class Sandbox:
    """A running sandbox org and the handles a test or benchmark needs."""

    def __init__(self, config: SandboxConfig, tls: TlsFiles, sock: socket.socket) -> None:
        self.config = config
        self.org = SandboxOrg(config)
        self.tls = tls
        self.socket = sock
        host, port = sock.getsockname()[:2]
        self.host, self.port = host, port
        self.url = f"https://{host}:{port}"
        self.server = self._server()
        # After uvicorn.Config, which (re)configures uvicorn's loggers; addFilter skips duplicates.
        logging.getLogger("uvicorn.error").addFilter(_QUIET_IDLE_SHUTDOWN)
        self._thread: threading.Thread | None = None

    def _server(self) -> uvicorn.Server:
        return uvicorn.Server(
            uvicorn.Config(
                build_app(self.org),
                ssl_certfile=str(self.tls.cert_path),
                ssl_keyfile=str(self.tls.key_path),
                log_level="warning",
                access_log=False,
                lifespan="off",
                timeout_keep_alive=30,
                # Idle TLS clients never answer close_notify; do not wait on them at shutdown.
                timeout_graceful_shutdown=2,
                backlog=2048,
            )
        )

    # --- what a client needs ------------------------------------------------------------
    @property
    def ca_path(self) -> Path:
        return self.tls.ca_path

    @property
    def login_domain(self) -> str:
        """The `domain=` that makes simple-salesforce log in here instead of at salesforce.com."""
        return f"{self.host}:{self.port}/sandbox"

    def session(self) -> requests.Session:
        """A requests.Session that trusts the sandbox's certificate authority."""
        session = requests.Session()
        session.verify = str(self.ca_path)
        # REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE otherwise override Session.verify (requests#3829).
        session.trust_env = False
        return session

    def client(self, **overrides: Any) -> Salesforce:
        """A simple_salesforce.Salesforce logged in by SOAP username/password/token."""
        kwargs: dict[str, Any] = {
            "username": self.config.username,
            "password": self.config.password,
            "security_token": self.config.security_token,
            "domain": self.login_domain,
            "session": self.session(),
            "version": API_VERSION,
        }
        kwargs.update(overrides)
        return Salesforce(**kwargs)

    def direct_client(self, session_id: str | None = None) -> Salesforce:
        """A client built from instance_url + session_id (no login partial, so no silent re-login)."""
        token = session_id or self.org.sessions.issue(self.config.username)
        return Salesforce(
            instance_url=self.url, session_id=token, session=self.session(), version=API_VERSION
        )

    def env(self) -> dict[str, str]:
        """The settings that point optout-sync (and any client reading the same names) here."""
        return {
            "SALESFORCE_USERNAME": self.config.username,
            "SALESFORCE_PASSWORD": self.config.password,
            "SALESFORCE_SECURITY_TOKEN": self.config.security_token,
            "SALESFORCE_DOMAIN": self.login_domain,
            "SALESFORCE_CA_BUNDLE": str(self.ca_path),
        }

    # --- state and admin helpers (same powers as /__admin, without needing it enabled) ---------
    @property
    def store(self) -> RecordStore:
        return self.org.store

    @property
    def call_log(self) -> list[Call]:
        """API calls so far (logins and admin calls excluded); see `org.call_log` for filters."""
        return self.org.call_log.calls("api")

    def api_calls(self, path_contains: str | None = None) -> int:
        return len(self.org.call_log.calls("api", path_contains))

    def clear_calls(self) -> None:
        self.org.call_log.clear()

    def add_fault(self, kind: str, **options: Any) -> None:
        self.org.faults.add({"kind": kind, **options})

    def clear_faults(self) -> None:
        self.org.faults.clear()

    def expire_sessions(self, session_id: str | None = None) -> int:
        return self.org.sessions.expire(session_id)

    def set_api_usage(self, used: int = 0, limit: int | None = None) -> None:
        self.org.usage.reset(limit)
        self.org.usage.used = used

    def convert_lead(self, lead_id: str, contact_id: str) -> Record:
        return convert_lead(self.org, lead_id, contact_id)

    def record(self, record_id: str) -> Record | None:
        found = self.store.locate(record_id)
        return None if found is None else dict(found[1])

    def insert(self, sobject: str, **values: Any) -> str:
        return str(self.store.insert(sobject, values)["Id"])

    # --- life cycle ------------------------------------------------------------------------
    def start(self, timeout: float = 15.0) -> None:
        """Serves in a background thread; after `stop()`, serves the same org again on the same
        port (an org back from an outage: records, sessions and call log kept)."""
        if self.socket.fileno() == -1:
            self.socket = _bind(self.host, self.port)
            self.server = self._server()
        self._thread = threading.Thread(
            target=self._serve, name=f"sandbox:{self.port}", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:  # wait on the condition: uvicorn flags itself started
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the sandbox server did not start")
            time.sleep(0.005)

    def _serve(self) -> None:
        asyncio.run(self.server.serve(sockets=[self.socket]))

    def stop(self) -> None:
        self.server.should_exit = True
        self.server.force_exit = True  # tests and benchmarks leave kept-alive clients behind
        if self._thread is not None:
            self._thread.join(timeout=15)
        self.socket.close()
        self.org.save_snapshot()

    def serve_forever(self) -> None:
        """Foreground mode for the command line; returns on Ctrl-C / SIGTERM."""
        try:
            self._serve()
        finally:
            self.socket.close()
            self.org.save_snapshot()


def prepare(config: SandboxConfig) -> Sandbox:
    """TLS files, a bound socket and a seeded org, not yet serving."""
    tls_dir = config.tls_dir or Path(tempfile.mkdtemp(prefix="optout-sandbox-"))
    tls = make_tls(tls_dir)
    sock = _bind(config.host, config.port)
    return Sandbox(replace(config, tls_dir=tls_dir), tls, sock)


@contextmanager
def running_sandbox(config: SandboxConfig | None = None, **options: Any) -> Iterator[Sandbox]:
    """A sandbox serving in a background thread on an ephemeral port (tests, benchmarks)."""
    sandbox = prepare(replace(config or SandboxConfig(), **options))
    sandbox.start()
    try:
        yield sandbox
    finally:
        sandbox.stop()
