"""A range of inbound positions that will never be recorded, accepted by an operator.

When the inbound log has lost messages before they were recorded (retention expired, records
deleted, a store restored from an old backup), the operator may accept the gap to go on. The
acceptance is kept in the event log itself, so that a replay of the log shows which inbound
positions were never seen, and who decided to go on without them.
"""

from __future__ import annotations

import uuid

from eventsourcing.domain import Aggregate

# Its own namespace: a gap's id never collides with a person's.
GAP_NAMESPACE = uuid.UUID("0b1e4c8a-1f5d-4e0a-9a53-6d2c7f1e8b40")


class InputGap(Aggregate):
    """Positions `first`..`last` of `source` (e.g. `topic:partition` offsets) were skipped."""

    class Accepted(Aggregate.Created):
        source: str
        first: int
        last: int
        accepted_by: str

    @staticmethod
    def create_id(source: str, first: int, last: int, accepted_by: str) -> uuid.UUID:
        return gap_id(source, first)

    def __init__(self, source: str, first: int, last: int, accepted_by: str) -> None:
        if not 0 <= first <= last:
            raise ValueError(f"a gap runs from a first to a last position, got {first}..{last}")
        self.source = source
        self.first = first
        self.last = last
        self.accepted_by = accepted_by


def gap_id(source: str, first: int) -> uuid.UUID:
    """The same gap accepted twice is the same aggregate (the second is refused)."""
    return uuid.uuid5(GAP_NAMESPACE, f"{source}@{first}")
