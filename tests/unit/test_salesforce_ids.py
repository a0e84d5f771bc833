"""Two implementations of Salesforce's 18-character ids — the product's (`domain.identity`) and
the fake org's (`sandbox.ids`), written apart so that a mistake on one side is not mirrored on
the other — agree with Salesforce's documented pair and with each other."""

from __future__ import annotations

import string

import pytest
from hypothesis import given, settings
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


def _checksum_by_the_letter(id15: str) -> str:
    """The checksum as Salesforce describes it, a character at a time (the product's first form)."""
    suffix = ""
    for chunk in (id15[0:5], id15[5:10], id15[10:15]):
        bits = sum(1 << i for i, char in enumerate(chunk) if "A" <= char <= "Z")
        suffix += identity._ALPHABET[bits]
    return suffix


@settings(max_examples=500)
@given(
    st.text(alphabet=string.ascii_letters + string.digits, min_size=15, max_size=15)
    | st.text(string.printable, max_size=20)
    | st.text(max_size=20)
)
def test_the_checksum_table_is_the_checksum_by_the_letter(text: str) -> None:
    assert identity.checksum(text) == _checksum_by_the_letter(text)
