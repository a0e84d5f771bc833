"""One sandbox org's whole state: records, sessions, faults, bulk jobs, API usage and the call log."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Any

from sandbox import seed
from sandbox.bulk import BulkJobs
from sandbox.config import SandboxConfig
from sandbox.faults import FaultPlan
from sandbox.login import Sessions
from sandbox.soql import Query
from sandbox.store import Record, RecordStore, make_id


@dataclass(frozen=True)
class Call:
    """One HTTP exchange as the server saw it; `kind` is api, login or admin."""

    method: str
    path: str
    status: int
    duration_ms: float
    kind: str
    at: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "path": self.path,
            "status": self.status,
            "duration_ms": round(self.duration_ms, 3),
            "kind": self.kind,
            "at": self.at,
        }


class CallLog:
    """Bounded, thread-safe record of calls; tests and benchmarks count API calls with it."""

    def __init__(self, size: int) -> None:
        self._calls: deque[Call] = deque(maxlen=size)
        self._lock = threading.Lock()

    def add(self, call: Call) -> None:
        with self._lock:
            self._calls.append(call)

    def calls(self, kind: str | None = "api", path_contains: str | None = None) -> list[Call]:
        with self._lock:
            snapshot = list(self._calls)
        return [
            c
            for c in snapshot
            if (kind is None or c.kind == kind)
            and (path_contains is None or path_contains in c.path)
        ]

    def clear(self) -> None:
        with self._lock:
            self._calls.clear()

    def __len__(self) -> int:
        return len(self._calls)


class ApiUsage:
    """The org's daily API request allowance, counted per authenticated API call."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self._lock = threading.Lock()

    def take(self) -> bool:
        """Count one call; False (and not counted) when the allowance is spent."""
        with self._lock:
            if self.used >= self.limit:
                return False
            self.used += 1
            return True

    def header(self) -> bytes:
        return f"api-usage={self.used}/{self.limit}".encode()

    def reset(self, limit: int | None = None) -> None:
        with self._lock:
            self.used = 0
            if limit is not None:
                self.limit = limit


class QueryCursors:
    """Open query locators (nextRecordsUrl); the oldest are dropped as Salesforce expires them."""

    def __init__(self, keep: int = 200) -> None:
        self._cursors: OrderedDict[str, tuple[Query, list[Record]]] = OrderedDict()
        self._serial = 0
        self._keep = keep
        self._lock = threading.Lock()

    def open(self, query: Query, rows: list[Record]) -> str:
        with self._lock:
            self._serial += 1
            locator = make_id("01g", self._serial)
            self._cursors[locator] = (query, rows)
            while len(self._cursors) > self._keep:
                self._cursors.popitem(last=False)
        return locator

    def get(self, locator: str) -> tuple[Query, list[Record]] | None:
        return self._cursors.get(locator)


class SandboxOrg:
    def __init__(self, config: SandboxConfig) -> None:
        self.config = config
        self.store = RecordStore(config.marketo_field)
        self.sessions = Sessions()
        self.faults = FaultPlan()
        self.usage = ApiUsage(config.daily_api_limit)
        self.call_log = CallLog(config.call_log_size)
        self.cursors = QueryCursors()
        self.bulk = BulkJobs(config, self.store, self.faults)
        self.started_at = time.time()
        for spec in config.faults:
            self.faults.add(dict(spec))
        self._fill()

    def _fill(self) -> None:
        snapshot = self.config.snapshot_file
        if snapshot is not None and snapshot.exists():
            seed.load_file(self.store, snapshot)
            return
        if self.config.seed_file is not None:
            seed.load_file(self.store, self.config.seed_file)
        if self.config.generate:
            seed.generate(self.store, self.config.generate)

    def save_snapshot(self) -> bool:
        if self.config.snapshot_file is None:
            return False
        self.store.save(self.config.snapshot_file)
        return True
