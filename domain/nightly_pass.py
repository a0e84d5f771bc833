"""The record of one nightly pass, kept in the event log: when it ran, what it read, imported and
pushed, what failed, the conflicts it found and the API calls it spent.

A scheduled pass is named by its slot (the local date it was due, e.g. `2027-03-14`), so the same
slot recorded twice is the same aggregate and the second is refused by the store; a pass run on
demand is named by when it started.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from eventsourcing.domain import Aggregate
from eventsourcing.utils import get_topic

from domain.application import ChangeRecorder

# Its own namespace: a pass's id never collides with a person's or a gap's.
PASS_NAMESPACE = uuid.UUID("5d0c2b7e-93a4-4c61-8f0e-2a9b1c3d4e5f")
MANUAL = "manual"


def pass_id(slot: str) -> uuid.UUID:
    return uuid.uuid5(PASS_NAMESPACE, slot)


class NightlyPass(Aggregate):
    """One pass, recorded once when it ends (a pass that died midway left no record, and its
    slot runs again: every change it had recorded is recognised by its identity)."""

    class Recorded(Aggregate.Created):
        slot: str  # the local date a scheduled pass was due, or `manual:<started_at>`
        started_at: datetime
        finished_at: datetime
        outcome: str  # done | failed
        error: str | None
        read: int  # Salesforce records read
        imported: int  # unsubscribes recorded here from Salesforce
        pushed: int  # records sent to Salesforce
        accepted: int
        failed: int  # pushes refused, retried later, or lost with a failed job; refused imports
        pending_link: int  # opted-out persons without a Salesforce id
        conflicts: list[dict[str, str]]  # {record_id, person_key}: removed here, checked there
        api_calls: int
        log_position: int  # the event log's last notification when the pass began

    @staticmethod
    def create_id(slot: str, **_: Any) -> uuid.UUID:
        return pass_id(slot)

    def __init__(
        self,
        slot: str,
        started_at: datetime,
        finished_at: datetime,
        outcome: str,
        error: str | None,
        read: int,
        imported: int,
        pushed: int,
        accepted: int,
        failed: int,
        pending_link: int,
        conflicts: list[dict[str, str]],
        api_calls: int,
        log_position: int,
    ) -> None:
        self.slot = slot
        self.started_at = started_at
        self.finished_at = finished_at
        self.outcome = outcome
        self.error = error
        self.read = read
        self.imported = imported
        self.pushed = pushed
        self.accepted = accepted
        self.failed = failed
        self.pending_link = pending_link
        self.conflicts = conflicts
        self.api_calls = api_calls
        self.log_position = log_position


def passes(store: ChangeRecorder) -> Iterator[NightlyPass.Recorded]:
    """Every recorded pass, oldest first."""
    start: int | None = None
    topics = [get_topic(NightlyPass.Recorded)]
    while True:
        found = store.recorder.select_notifications(
            start, 1000, topics=topics, inclusive_of_start=start is None
        )
        for notification in found:
            event = store.mapper.to_domain_event(notification)
            assert isinstance(event, NightlyPass.Recorded)
            yield event
        if len(found) < 1000:
            return
        start = found[-1].id


def last_done(store: ChangeRecorder) -> NightlyPass.Recorded | None:
    done = [p for p in passes(store) if p.outcome == "done"]
    return done[-1] if done else None


def recorded_slots(store: ChangeRecorder) -> set[str]:
    """The slots whose pass is done."""
    return {p.slot for p in passes(store) if p.outcome == "done"}
