"""When the nightly pass is due: 20:00 America/Los_Angeles on both daylight-saving days and an
ordinary one, wall times the changes skip or repeat, and the missed pass run once at start-up."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from consumers.nightly_schedule import Schedule, run_schedule

PACIFIC = Schedule(time(20, 0), ZoneInfo("America/Los_Angeles"))


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def test_an_ordinary_day_in_winter_and_in_summer() -> None:
    assert PACIFIC.instant(date(2027, 1, 15)) == utc(2027, 1, 16, 4)  # PST, UTC-8
    assert PACIFIC.instant(date(2027, 6, 1)) == utc(2027, 6, 2, 3)  # PDT, UTC-7
    assert PACIFIC.instant(date(2027, 6, 2)) - PACIFIC.instant(date(2027, 6, 1)) == timedelta(
        hours=24
    )


def test_the_spring_change_2027_03_14_makes_a_23_hour_day() -> None:
    assert PACIFIC.instant(date(2027, 3, 13)) == utc(2027, 3, 14, 4)  # still PST
    assert PACIFIC.instant(date(2027, 3, 14)) == utc(2027, 3, 15, 3)  # PDT since 02:00
    assert PACIFIC.instant(date(2027, 3, 14)) - PACIFIC.instant(date(2027, 3, 13)) == timedelta(
        hours=23
    )
    assert PACIFIC.instant(date(2027, 3, 14)).astimezone(PACIFIC.zone).hour == 20


def test_the_autumn_change_2027_11_07_makes_a_25_hour_day() -> None:
    assert PACIFIC.instant(date(2027, 11, 6)) == utc(2027, 11, 7, 3)  # still PDT
    assert PACIFIC.instant(date(2027, 11, 7)) == utc(2027, 11, 8, 4)  # PST since 02:00
    assert PACIFIC.instant(date(2027, 11, 7)) - PACIFIC.instant(date(2027, 11, 6)) == timedelta(
        hours=25
    )
    assert PACIFIC.instant(date(2027, 11, 7)).astimezone(PACIFIC.zone).hour == 20


def test_a_wall_time_the_change_skips_or_repeats() -> None:
    early = Schedule(time(2, 30), ZoneInfo("America/Los_Angeles"))
    # 02:30 does not exist on 2027-03-14: it runs at 03:30 PDT, one hour after the jump.
    assert early.instant(date(2027, 3, 14)) == utc(2027, 3, 14, 10, 30)
    repeated = Schedule(time(1, 30), ZoneInfo("America/Los_Angeles"))
    # 01:30 happens twice on 2027-11-07: the first one (PDT) runs, once.
    assert repeated.instant(date(2027, 11, 7)) == utc(2027, 11, 7, 8, 30)


def test_which_slot_is_due() -> None:
    # 19:59 Pacific on 2027-03-14 is before that day's pass: the previous day's is the latest.
    assert PACIFIC.latest_due(utc(2027, 3, 15, 2, 59)) == date(2027, 3, 13)
    assert PACIFIC.latest_due(utc(2027, 3, 15, 3, 0)) == date(2027, 3, 14)
    assert PACIFIC.due(utc(2027, 3, 15, 3, 0), {"2027-03-14"}) is None
    assert PACIFIC.seconds_until_next(utc(2027, 3, 15, 2, 0)) == 3600.0


class FakeClock:
    def __init__(self, now: datetime, end: datetime) -> None:
        self.now, self.end = now, end
        self.waits: list[float] = []

    def __call__(self) -> datetime:
        return self.now

    def wait(self, seconds: float) -> bool:
        self.waits.append(seconds)
        self.now += timedelta(seconds=seconds)
        return self.now >= self.end


def test_a_missed_pass_runs_once_at_start_up_then_each_day_at_its_time() -> None:
    # Down since 2027-03-10: the passes of the 10th to the 13th were missed; only the latest runs.
    clock = FakeClock(utc(2027, 3, 14, 12), end=utc(2027, 3, 16, 12))
    recorded = {"2027-03-09"}
    runs: list[tuple[date, datetime]] = []

    def run_pass(slot: date) -> bool:
        runs.append((slot, clock.now))
        recorded.add(slot.isoformat())
        return True

    run_schedule(PACIFIC, lambda: recorded, run_pass, clock.wait, clock)
    assert runs == [
        (date(2027, 3, 13), utc(2027, 3, 14, 12)),  # at start-up, once
        (date(2027, 3, 14), utc(2027, 3, 15, 3)),  # 20:00 PDT
        (date(2027, 3, 15), utc(2027, 3, 16, 3)),
    ]
    assert max(clock.waits) <= 60.0  # the clock is read again at least once a minute


def test_a_pass_already_recorded_by_another_scheduler_is_not_run_again() -> None:
    clock = FakeClock(utc(2027, 11, 8, 5), end=utc(2027, 11, 8, 6))
    runs: list[date] = []
    run_schedule(
        PACIFIC, lambda: {"2027-11-07"}, lambda s: bool(runs.append(s)) or True, clock.wait, clock
    )
    assert runs == []


def test_a_failed_pass_is_tried_again_later() -> None:
    clock = FakeClock(utc(2027, 6, 2, 3), end=utc(2027, 6, 2, 4))
    attempts: list[datetime] = []
    recorded: set[str] = set()

    def run_pass(slot: date) -> bool:
        attempts.append(clock.now)
        if len(attempts) < 3:
            return False
        recorded.add(slot.isoformat())
        return True

    run_schedule(PACIFIC, lambda: recorded, run_pass, clock.wait, clock, retry_s=900.0)
    assert attempts == [utc(2027, 6, 2, 3), utc(2027, 6, 2, 3, 15), utc(2027, 6, 2, 3, 30)]
