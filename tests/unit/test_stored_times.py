"""A page's stored times as the audit writes them (`projections.stored.utc_texts`, checked for a
whole page at once) are each time's `Stamp.utc` and `utc_text`: on pages of UTC times with
microseconds (the fast path), and pages mixing other offsets, zero microseconds, early years."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from hypothesis import given, settings
from hypothesis import strategies as st

from projections.stored import Stamp, utc_texts
from projections.timestamps import utc_text

utc_times = st.datetimes(
    min_value=datetime(1000, 1, 1), max_value=datetime(9998, 12, 31), timezones=st.just(UTC)
).filter(lambda at: at.microsecond != 0)
offsets = st.integers(min_value=-14 * 60, max_value=14 * 60).map(
    lambda minutes: timezone(timedelta(minutes=minutes))
)
any_times = st.datetimes(
    min_value=datetime(2, 1, 1), max_value=datetime(9998, 12, 31), timezones=offsets
) | st.datetimes(min_value=datetime(2, 1, 1), timezones=st.just(UTC))
pages = st.lists(utc_times, max_size=30) | st.lists(any_times, max_size=30)


@settings(max_examples=400)
@given(pages)
def test_a_pages_utc_texts_are_each_times_own(times: list[datetime]) -> None:
    texts = [at.isoformat() for at in times]
    assert utc_texts(texts) == [Stamp(text).utc for text in texts]
    assert utc_texts(texts) == [utc_text(at) for at in times]


def test_a_page_of_utc_times_with_and_without_microseconds() -> None:
    at = datetime(2026, 3, 1, 9, 30, tzinfo=UTC)
    texts = [at.isoformat(), at.replace(microsecond=5).isoformat()]
    assert utc_texts(texts) == ["2026-03-01T09:30:00.000000Z", "2026-03-01T09:30:00.000005Z"]
    assert utc_texts(texts[1:]) == ["2026-03-01T09:30:00.000005Z"]
    assert utc_texts([]) == []
