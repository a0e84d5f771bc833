"""The pusher's API calls, stored with its outcomes: the daily budget's count after a restart."""

from __future__ import annotations

from eventsourcing.persistence import Tracking

from adapters.event_store import environment
from domain.api_spend import DAY_S, day_of
from domain.application import ChangeRecorder
from domain.push import record_outcomes, spent_calls

NOW = 1_764_460_800.0 + 3600  # 2025-11-30 01:00 UTC: the window reaches into the day before


def test_the_calls_of_the_last_24_hours_are_read_back_across_two_days() -> None:
    store = ChangeRecorder(env=environment("sqlite:///:memory:", create_table=True))
    too_old = NOW - DAY_S - 1
    yesterday = [NOW - DAY_S + 10, NOW - 7200, NOW - 3601]
    today = [NOW - 60, NOW - 1]
    assert day_of(yesterday[0]) != day_of(today[0])
    record_outcomes(store, [], Tracking("pusher", 1), [too_old, *yesterday[:2]])
    record_outcomes(store, [], None, [yesterday[2], today[0]])
    record_outcomes(store, [], None, [today[1]])
    assert spent_calls(store, NOW) == sorted([*yesterday, *today])
    assert store.position("pusher") == 1
    assert spent_calls(store, NOW + DAY_S) == []  # a day later the window is empty
