"""Two implementations of Salesforce's 18-character ids — the product's (`domain.identity`) and
the fake org's (`sandbox.ids`), written apart so that a mistake on one side is not mirrored on
the other — agree with Salesforce's documented pair and with each other."""

from __future__ import annotations

import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain import identity
from sandbox import ids

# Salesforce's documentation shows 001xx000003DGb2 as 001xx000003DGb2AAG.
KNOWN_PAIRS = [("001xx000003DGb2", "001xx000003DGb2AAG")]


@pytest.mark.parametrize(("id15", "id18"), KNOWN_PAIRS)
def test_the_documented_pair(id15: str, id18: str) -> None:
    assert identity.to_18(id15) == ids.to_18(id15) == id18
    # Case matters in the first 15: the suffix tells the two ids apart.
    assert identity.to_18(id15.lower()) == ids.to_18(id15.lower()) != id18


@given(st.text(alphabet=string.ascii_letters + string.digits, min_size=15, max_size=15))
def test_both_sides_agree_on_every_id(id15: str) -> None:
    full = identity.to_18(id15)
    assert ids.to_18(id15) == full
    assert identity.to_18(full) == ids.to_18(full) == full
    assert identity.to_18(full[:15] + full[15:].lower()) == ids.to_18(full[:15] + full[15:].lower())
