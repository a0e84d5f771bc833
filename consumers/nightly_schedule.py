"""When the nightly pass is due: daily at a local time in a time zone, daylight-saving aware.

A slot is the local date a pass is due on (`2027-03-14`); its instant is that date's local time in
the zone. A local time the spring change skips (02:30 on a night that jumps from 02:00 to 03:00)
runs at the same distance after the jump (03:30); one the autumn change repeats runs at its first
occurrence. Once started, the scheduler runs the latest slot due that has no recorded pass — which
is also how a pass missed while the service was down runs once at start-up (only the latest: a
week down is one catch-up pass, not seven).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Container
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo


@dataclass(frozen=True)
class Schedule:
    at: time  # local wall-clock time
    zone: ZoneInfo

    def instant(self, slot: date) -> datetime:
        """The UTC instant the pass of this local date is due."""
        local = datetime.combine(slot, self.at, tzinfo=self.zone)
        # A wall time that does not exist (skipped by the spring change) comes back from UTC
        # different: fold=0 reads it with the offset before the jump, i.e. just after the jump.
        return local.astimezone(UTC)

    def latest_due(self, now: datetime) -> date:
        """The local date of the latest slot at or before `now`."""
        today = now.astimezone(self.zone).date()
        return today if self.instant(today) <= now else today - timedelta(days=1)

    def next_slot(self, now: datetime) -> date:
        """The local date of the first slot after `now`."""
        return self.latest_due(now) + timedelta(days=1)

    def due(self, now: datetime, recorded: Container[str]) -> date | None:
        """The slot to run now: the latest one due, unless its pass is recorded."""
        slot = self.latest_due(now)
        return None if slot.isoformat() in recorded else slot

    def seconds_until_next(self, now: datetime) -> float:
        return (self.instant(self.next_slot(now)) - now).total_seconds()


@dataclass
class ScheduleStats:
    """What a running scheduler shows on /metrics and /readyz."""

    passes: Counter[str] = field(default_factory=Counter)  # by outcome: done, failed, already_run
    last_pass_at: datetime | None = None  # when the last pass this process ran ended
    next_pass_at: datetime | None = None  # the next slot's instant
    store_error: str | None = None  # why the store did not answer the last time it was asked


def run_schedule(
    schedule: Schedule,
    recorded: Callable[[], Container[str]],
    run_pass: Callable[[date], bool],
    wait: Callable[[float], bool],
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    check_every_s: float = 60.0,
    retry_s: float = 900.0,
    stats: ScheduleStats | None = None,
) -> None:
    """Runs each slot's pass once, the missed one first, until `wait` says stop (returns True).
    `run_pass` returns False when the pass failed and should be tried again after `retry_s`.

    The clock is read again after every wait (at least once a minute), so a suspended machine or a
    clock step is noticed; `recorded` is read again before each pass (another scheduler may have
    run it).
    """
    stats = stats or ScheduleStats()
    while True:
        now = clock()
        stats.next_pass_at = schedule.instant(schedule.next_slot(now))
        slot = schedule.due(now, recorded())
        if slot is not None:
            if not run_pass(slot) and wait(retry_s):
                return
            continue
        if wait(min(check_every_s, max(schedule.seconds_until_next(now), 0.0))):
            return
