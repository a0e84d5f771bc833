"""The read models' texts: times as sortable UTC with microseconds whatever the time's zone, and
event ids as `str` of the UUID gives them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from uuid import UUID

from hypothesis import given
from hypothesis import strategies as st

from projections.audit_trail import _texts
from projections.timestamps import utc_text

zones = st.sampled_from([UTC, timezone(timedelta(hours=2)), timezone(timedelta(hours=-5)), None])


@given(st.datetimes(min_value=datetime(1000, 1, 2), max_value=datetime(9999, 12, 30)), zones)
def test_utc_text_is_the_utc_time_with_microseconds(at: datetime, zone: timezone | None) -> None:
    when = at.replace(tzinfo=zone)
    expected = (when if zone else when.replace(tzinfo=UTC)).astimezone(UTC)
    assert utc_text(when) == expected.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    assert datetime.fromisoformat(str(utc_text(when))) == expected


@given(st.lists(st.uuids()))
def test_event_ids_are_their_uuid_text(ids: list[UUID]) -> None:
    assert _texts(ids) == [str(event_id) for event_id in ids]
