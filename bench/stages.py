"""Stage timers for the ingest bench: where each change's time goes, in µs per change.

Wraps the ingest's stage functions for one instrumented run (the timed runs are never wrapped: a
timer costs about a microsecond a call). Stages nest only as listed: `store` includes `insert`,
which is reported apart; `other` is the window's wall time less every stage.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from eventsourcing.persistence import Mapper

from consumers import ingest, slice_writer
from domain.application import ChangeRecorder

STAGES = {
    "fetch": "Kafka poll: fetch and record parsing (kafka-python)",
    "decode": "contract decode and validation, to a domain change",
    "domain": "load or create persons, apply the changes (the application's policy)",
    "mapping": "domain event -> stored event (topic, id, JSON state)",
    "insert": "the rows' inserts (events, chain, tracking, index)",
    "commit": "the rest of the store write: transaction, lock, commit",
    "gc": "cyclic garbage collection pauses (inside the stages above)",
    "other": "the rest: slicing, offsets, cache, logging",
}


class StageTimers:
    def __init__(self) -> None:
        self.ns = dict.fromkeys(STAGES, 0)
        self._gc_started = 0

    def timed(self, stage: str, function: Callable[..., Any]) -> Callable[..., Any]:
        clock, totals = time.perf_counter_ns, self.ns

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            began = clock()
            try:
                return function(*args, **kwargs)
            finally:
                totals[stage] += clock() - began

        return wrapper

    def reset(self) -> None:
        for stage in self.ns:
            self.ns[stage] = 0

    def _on_gc(self, phase: str, _info: dict[str, Any]) -> None:
        if phase == "start":
            self._gc_started = time.perf_counter_ns()
        else:
            self.ns["gc"] += time.perf_counter_ns() - self._gc_started

    def per_change(self, wall_ns: int, changes: int) -> dict[str, float]:
        """µs per change of each stage; `store` (incl. insert) becomes insert + commit."""
        ns = dict(self.ns)
        ns["commit"] = ns.pop("store", 0) - ns["insert"]
        ns["other"] = wall_ns - sum(v for k, v in ns.items() if k not in ("gc", "other"))
        return {stage: ns.get(stage, 0) / changes / 1000 for stage in STAGES}


@contextmanager
def instrumented(recorder_class: type) -> Iterator[StageTimers]:
    """The ingest's stages wrapped with timers while inside (recorder_class: the store's)."""
    timers = StageTimers()
    patches = [
        (ingest.Ingest, "_poll", "fetch"),
        (slice_writer, "change_or_refusal", "decode"),
        (ChangeRecorder, "policy", "domain"),
        (Mapper, "to_stored_event", "mapping"),
        (recorder_class, "insert_events", "store"),
        (recorder_class, "_insert_events", "insert"),
    ]
    originals = [(owner, name, getattr(owner, name)) for owner, name, _ in patches]
    for (owner, name, stage), (_, _, original) in zip(patches, originals, strict=True):
        timers.ns.setdefault(stage, 0)
        setattr(owner, name, timers.timed(stage, original))
    gc.callbacks.append(timers._on_gc)
    try:
        yield timers
    finally:
        gc.callbacks.remove(timers._on_gc)
        for owner, name, original in originals:
            setattr(owner, name, original)
