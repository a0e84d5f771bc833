"""The Salesforce API calls the live pusher made, kept in the event store beside its outcomes, so
that its daily budget (OPTOUT_SALESFORCE_DAILY_BUDGET, counted over a rolling 24 hours) survives a
restart: one aggregate per UTC day, one event per pass that made calls."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

from eventsourcing.domain import Aggregate

# Its own namespace: a day's id never collides with a person's or a gap's.
SPEND_NAMESPACE = uuid.UUID("5f0c2a7e-8d41-4b9a-a3e6-1c7d9e2b4f60")
DAY_S = 24 * 3600.0


class ApiSpend(Aggregate):
    """The calls made on one UTC day (`YYYY-MM-DD`), each by when it was sent."""

    class Opened(Aggregate.Created):
        day: str

    class CallsMade(Aggregate.Event):
        times: list[float]  # when each call was sent, in seconds since the epoch

        def apply(self, spend: ApiSpend) -> None:
            spend.times.extend(self.times)

    @staticmethod
    def create_id(day: str) -> uuid.UUID:
        return spend_id(day)

    def __init__(self, day: str) -> None:
        self.day = day
        self.times: list[float] = []

    def made(self, times: Sequence[float]) -> None:
        self.trigger_event(self.CallsMade, times=list(times))


def spend_id(day: str) -> uuid.UUID:
    return uuid.uuid5(SPEND_NAMESPACE, f"api-spend:{day}")


def day_of(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).date().isoformat()


def days_back(now: float) -> list[str]:
    """The days a rolling 24 hours ending now touches."""
    return sorted({day_of(now - DAY_S), day_of(now)})
