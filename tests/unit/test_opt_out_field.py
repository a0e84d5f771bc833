"""Which field the live push writes: the vendor's rule, with no I/O."""

from __future__ import annotations

import pytest

from domain.opt_out_field import OptOutField, live_push_field


@pytest.mark.parametrize("chosen", list(OptOutField))
def test_with_the_nightly_sync_enabled_the_live_push_writes_the_chosen_field(
    chosen: OptOutField,
) -> None:
    assert live_push_field(nightly_enabled=True, chosen=chosen) is chosen


@pytest.mark.parametrize("chosen", list(OptOutField))
def test_with_the_nightly_sync_disabled_the_live_push_still_sets_email_opt_out(
    chosen: OptOutField,
) -> None:
    assert live_push_field(nightly_enabled=False, chosen=chosen) is OptOutField.EMAIL_OPT_OUT
