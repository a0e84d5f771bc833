"""`optout-sync person`'s table: every time with its date and in UTC (marked Z), whatever zone the
producer wrote it in, so rows compare at a glance."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta, timezone

from rich.console import Console

from consumers.cli_person import print_state
from projections.person_state import HistoryEntry, MarkView, PersonState

PACIFIC = timezone(timedelta(hours=-8))


def _entry(occurred: datetime, recorded: datetime, source: str) -> HistoryEntry:
    return HistoryEntry(
        change="unsubscribed",
        source=source,
        actor="recipient",
        channel="email_link",
        occurred_at=occurred,
        recorded_at=recorded,
        event_id="e-1",
    )


def _printed(state: PersonState, width: int) -> str:
    out = io.StringIO()
    print_state(state, Console(file=out, width=width, color_system=None))
    return out.getvalue()


def test_history_times_are_dated_and_shown_in_utc_with_z() -> None:
    # 23:30 in California on 1 March is 07:30 UTC on 2 March: the date changes with the zone.
    occurred = datetime(2025, 3, 1, 23, 30, 5, tzinfo=PACIFIC)
    recorded = datetime(2025, 3, 2, 7, 31, 0, 250_000, tzinfo=UTC)
    state = PersonState(
        person_key="person:p-1",
        kind="person",
        opted_out=True,
        own_opted_out=True,
        latest_unsubscribe=MarkView(occurred_at=occurred, source="marketing", event_id="e-1"),
        latest_removal=None,
        opted_out_by_addresses=[],
        addresses=[],
        carried_by=[],
        salesforce_id=None,
        pending_link=True,
        version=1,
        history=[
            _entry(occurred, recorded, "marketing"),
            _entry(datetime(2024, 12, 31, 12, 0, tzinfo=UTC), recorded, "sales"),
        ],
    )
    for width in (200, 80):  # a narrow terminal wraps other columns, never a time
        shown = _printed(state, width)
        assert "latest unsubscribe 2025-03-02 07:30:05Z via marketing" in shown
        rows = [line for line in shown.splitlines() if line.startswith("│")]
        assert [row.split("│")[1].strip() for row in rows] == [
            "2025-03-02 07:30:05Z",  # occurred, in UTC
            "2024-12-31 12:00:00Z",
        ]
        assert [row.split("│")[-2].strip() for row in rows] == ["2025-03-02 07:31:00.250Z"] * 2
        assert "23:30" not in shown and "-08:00" not in shown
