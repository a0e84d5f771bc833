"""The nightly pass's settings: the defaults (20:00 America/Los_Angeles), and bad values naming
their variable."""

from __future__ import annotations

from datetime import time, timedelta

import pytest

from adapters.settings import ConfigError, load


def test_the_defaults_are_the_vendors() -> None:
    settings = load({})
    assert not settings.nightly_sync  # an admin turns it on, as the vendor's toggle
    assert (settings.nightly_at, settings.nightly_zone) == (time(20, 0), "America/Los_Angeles")
    assert settings.nightly_overlap == timedelta(minutes=10)
    assert settings.nightly_bulk_from == 2000


def test_each_can_be_set() -> None:
    settings = load(
        {
            "OPTOUT_NIGHTLY_SYNC": "on",
            "OPTOUT_NIGHTLY_AT": "7:05",
            "OPTOUT_NIGHTLY_ZONE": "Europe/Paris",
            "OPTOUT_NIGHTLY_OVERLAP": "120",
            "OPTOUT_NIGHTLY_BULK_FROM": "500",
        }
    )
    assert settings.nightly_sync and settings.nightly_at == time(7, 5)
    assert settings.nightly_zone == "Europe/Paris"
    assert settings.nightly_overlap == timedelta(minutes=2) and settings.nightly_bulk_from == 500


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("OPTOUT_NIGHTLY_AT", "8pm"),
        ("OPTOUT_NIGHTLY_AT", "24:00"),
        ("OPTOUT_NIGHTLY_ZONE", "Pacific Time"),
        ("OPTOUT_NIGHTLY_ZONE", "../../etc/passwd"),
        ("OPTOUT_NIGHTLY_OVERLAP", "-1"),
        ("OPTOUT_NIGHTLY_BULK_FROM", "0"),
        ("OPTOUT_NIGHTLY_SYNC", "sometimes"),
    ],
)
def test_a_bad_value_stops_start_up_naming_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=f"^{name}: "):
        load({name: value})
