"""The read models' times as text: sortable UTC with microseconds, whatever the time's zone."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from hypothesis import given
from hypothesis import strategies as st

from projections.timestamps import utc_text

zones = st.sampled_from([UTC, timezone(timedelta(hours=2)), timezone(timedelta(hours=-5)), None])


@given(st.datetimes(min_value=datetime(1000, 1, 2), max_value=datetime(9999, 12, 30)), zones)
def test_utc_text_is_the_utc_time_with_microseconds(at: datetime, zone: timezone | None) -> None:
    when = at.replace(tzinfo=zone)
    expected = (when if zone else when.replace(tzinfo=UTC)).astimezone(UTC)
    assert utc_text(when) == expected.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    assert datetime.fromisoformat(str(utc_text(when))) == expected
