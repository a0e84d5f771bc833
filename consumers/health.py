"""What a long-running process shows its monitoring: `/metrics` (Prometheus text format),
`/healthz` (the process answers) and `/readyz` (it can do its work: its broker and store answer,
it holds its partitions or its lock), on OPTOUT_METRICS_HOST:OPTOUT_METRICS_PORT.

Metrics are read from the workers' own counters when scraped (custom collectors), so the hot
paths do no metric bookkeeping of their own.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    generate_latest,
)
from prometheus_client.registry import Collector

from adapters.settings import ConfigError, Settings

log = logging.getLogger(__name__)

# Why the process is not ready, one reason per line; empty: ready.
Readiness = Callable[[], list[str]]


def registry(*collectors: Collector) -> CollectorRegistry:
    """The process's metrics: the given collectors and Python's own (process, platform, gc)."""
    found = CollectorRegistry(auto_describe=True)
    for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR, *collectors):
        found.register(collector)
    return found


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            self._answer(200, generate_latest(self.server.metrics), CONTENT_TYPE_LATEST)
        elif path == "/healthz":
            self._answer(200, b"ok\n")
        elif path == "/readyz":
            reasons = _reasons(self.server.readiness)
            if reasons:
                self._answer(503, ("not ready: " + "; ".join(reasons) + "\n").encode())
            else:
                self._answer(200, b"ready\n")
        else:
            self._answer(404, b"not found: /metrics, /healthz, /readyz\n")

    def _answer(self, status: int, body: bytes, content_type: str = "text/plain") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Scrapes every few seconds are not worth a log line."""


def _reasons(readiness: Readiness) -> list[str]:
    try:
        return readiness()
    except Exception as error:  # a probe that fails is an answer too: not ready, and why
        return [f"readiness check failed: {type(error).__name__}"]


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self, address: tuple[str, int], metrics: CollectorRegistry, readiness: Readiness
    ) -> None:
        super().__init__(address, _Handler)
        self.metrics = metrics
        self.readiness = readiness


@contextmanager
def serving(
    config: Settings, collectors: Iterable[Collector], readiness: Readiness
) -> Iterator[int | None]:
    """Serves the three endpoints while the block runs, if OPTOUT_METRICS_PORT is set; yields
    the port (None when not served)."""
    if config.metrics_port is None:
        yield None
        return
    try:
        server = _Server(
            (config.metrics_host, config.metrics_port), registry(*collectors), readiness
        )
    except OSError as error:
        raise ConfigError(
            f"OPTOUT_METRICS_PORT: cannot serve on {config.metrics_host}:{config.metrics_port} "
            f"({error.strerror})"
        ) from None
    thread = threading.Thread(target=server.serve_forever, name="metrics", daemon=True)
    thread.start()
    log.info("serving /metrics, /healthz, /readyz on %s:%d", *server.server_address[:2])
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()
