"""Injected failures: what a real org does on a bad day, switched on for the next N calls, for a
while, or by chance."""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from sandbox.ids import InvalidSalesforceId, to_18

REQUEST_FAULTS = (
    "latency",
    "invalid_session_id",
    "request_limit_exceeded",
    "server_unavailable",
    "drop_connection",
)
RECORD_FAULTS = ("unable_to_lock_row",)
JOB_FAULTS = ("bulk_job_failed",)  # a Bulk API 2.0 update job ends Failed as a whole
KINDS = REQUEST_FAULTS + RECORD_FAULTS + JOB_FAULTS


@dataclass
class Fault:
    """One failure mode; `count` (next N hits), `seconds` (for this long from when it is added)
    and `probability` may combine; none of them = every hit until cleared."""

    kind: str
    count: int | None = None
    probability: float | None = None
    latency_ms: int = 0
    record_ids: frozenset[str] = frozenset()
    path: str | None = None  # only requests whose path contains this text
    method: str | None = None
    sobject: str | None = None  # bulk_job_failed: only jobs on this object
    until: float | None = None  # monotonic time the fault ends (from `seconds`)
    fired: int = field(default=0)

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> Fault:
        """Validated from the admin endpoint's JSON; raises ValueError naming the bad key."""
        unknown = set(spec) - {
            "kind",
            "count",
            "probability",
            "latency_ms",
            "record_ids",
            "path",
            "method",
            "object",
            "seconds",
        }
        if unknown:
            raise ValueError(f"unknown fault keys: {sorted(unknown)}")
        kind = str(spec.get("kind", "")).lower()
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {list(KINDS)}")
        count = spec.get("count")
        if count is not None and (not isinstance(count, int) or count < 1):
            raise ValueError("count must be a positive integer")
        probability = spec.get("probability")
        if probability is not None and not (
            isinstance(probability, int | float) and 0 <= probability <= 1
        ):
            raise ValueError("probability must be between 0 and 1")
        try:
            ids = frozenset(to_18(str(i)) for i in spec.get("record_ids") or [])
        except InvalidSalesforceId as error:
            raise ValueError(f"record_ids: {error}") from None
        if kind in RECORD_FAULTS and not ids:
            raise ValueError("unable_to_lock_row needs record_ids")
        latency = spec.get("latency_ms", 0)
        if kind == "latency" and (not isinstance(latency, int | float) or latency <= 0):
            raise ValueError("latency needs a positive latency_ms")
        seconds = spec.get("seconds")
        if seconds is not None and (not isinstance(seconds, int | float) or seconds <= 0):
            raise ValueError("seconds must be a positive number")
        method = spec.get("method")
        return cls(
            kind=kind,
            count=count,
            probability=None if probability is None else float(probability),
            latency_ms=int(latency),
            record_ids=ids,
            path=spec.get("path"),
            method=str(method).upper() if method else None,
            sobject=spec.get("object"),
            until=None if seconds is None else time.monotonic() + float(seconds),
        )

    @property
    def spent(self) -> bool:
        return self.count is not None and self.fired >= self.count

    @property
    def over(self) -> bool:
        return self.until is not None and time.monotonic() >= self.until

    def describe(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "count": self.count,
            "probability": self.probability,
            "latency_ms": self.latency_ms,
            "record_ids": sorted(self.record_ids),
            "path": self.path,
            "method": self.method,
            "object": self.sobject,
            "seconds_left": None if self.until is None else max(0.0, self.until - time.monotonic()),
            "fired": self.fired,
        }


class FaultPlan:
    """The active faults; consulted once per API request and once per record write."""

    def __init__(self, seed: int | None = None) -> None:
        self._faults: list[Fault] = []
        self._lock = threading.Lock()
        self._random = random.Random(seed)

    def add(self, spec: dict[str, Any]) -> Fault:
        fault = Fault.from_spec(spec)
        with self._lock:
            self._faults.append(fault)
        return fault

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def describe(self) -> list[dict[str, Any]]:
        with self._lock:
            return [fault.describe() for fault in self._faults]

    def __bool__(self) -> bool:
        return bool(self._faults)

    def _fire(self, fault: Fault) -> bool:
        # Caller holds the lock; a spent or ended fault is dropped so the plan stays short.
        if fault.over:
            self._faults.remove(fault)
            return False
        if fault.probability is not None and self._random.random() >= fault.probability:
            return False
        fault.fired += 1
        if fault.spent:
            self._faults.remove(fault)
        return True

    def on_request(self, method: str, path: str) -> tuple[float, str | None]:
        """(seconds of latency to add, the failing kind or None) for one API request."""
        if not self._faults:
            return 0.0, None
        delay, failure = 0.0, None
        with self._lock:
            for fault in list(self._faults):
                if fault.kind not in REQUEST_FAULTS:
                    continue
                if (fault.path and fault.path not in path) or (
                    fault.method and fault.method != method
                ):
                    continue
                if fault.kind == "latency":
                    if self._fire(fault):
                        delay += fault.latency_ms / 1000
                elif failure is None and self._fire(fault):
                    failure = fault.kind
        return delay, failure

    def row_locked(self, record_id: str) -> bool:
        """Whether writing this record fails with UNABLE_TO_LOCK_ROW this time."""
        if not self._faults:
            return False
        with self._lock:
            for fault in list(self._faults):
                if (
                    fault.kind in RECORD_FAULTS
                    and record_id in fault.record_ids
                    and self._fire(fault)
                ):
                    return True
        return False

    def job_fails(self, sobject: str) -> bool:
        """Whether a Bulk update job on this object ends Failed this time."""
        if not self._faults:
            return False
        with self._lock:
            for fault in list(self._faults):
                if (
                    fault.kind in JOB_FAULTS
                    and fault.sobject in (None, sobject)
                    and self._fire(fault)
                ):
                    return True
        return False
