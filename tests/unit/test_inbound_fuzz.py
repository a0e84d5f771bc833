"""Fuzzing the decoder: whatever arrives, it returns a valid change or raises ContractError."""

from __future__ import annotations

import copy
import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.inbound import CODES, ChangeV1, ContractError, decode, encode
from tests.factories import good_message

FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_values: st.SearchStrategy[Any] = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=20,
)
# Values a producer might plausibly get wrong, mixed with the arbitrary ones.
near_misses = st.sampled_from(
    [
        "",
        "1",
        1,
        2,
        None,
        "2024-05-01T09:30:00",
        "0015g00000AbCdEAAV",
        "a@b",
        "user",
        "unsubscribe_removed",
        "person_linked",
        {"kind": "user"},
        {"kind": "user", "id": "u-1"},
        {"person_id": "p"},
        {"salesforce_id": "0035g00000AbCdE"},
    ]
)
PATHS = (
    [(key,) for key in good_message()]
    + [("person", key) for key in good_message()["person"]]
    + [("actor", key) for key in good_message()["actor"]]
)


def _outcome(value: bytes | None) -> None:
    """The property: a normalised ChangeV1 that survives a round trip, or a known ContractError."""
    try:
        change = decode(value)
    except ContractError as error:
        assert error.code in CODES
        assert error.reason
        return
    assert isinstance(change, ChangeV1)
    assert decode(encode(change)) == change


def _mutate(message: dict[str, Any], path: tuple[str, ...], action: str, junk: Any) -> None:
    *parents, leaf = path
    target = message
    for parent in parents:
        target = target[parent]
    if action == "drop":
        target.pop(leaf, None)
    elif action == "replace":
        target[leaf] = junk
    else:
        target[f"x_{leaf}"] = junk


def mutations(max_size: int) -> st.SearchStrategy[list[tuple[tuple[str, ...], str, Any]]]:
    """Up to `max_size` edits of a message: a field dropped, replaced or joined by junk."""
    return st.lists(
        st.tuples(
            st.sampled_from(PATHS),
            st.sampled_from(["drop", "replace", "insert"]),
            near_misses | json_values,
        ),
        min_size=1,
        max_size=max_size,
    )


def mutated(
    message: dict[str, Any], edits: list[tuple[tuple[str, ...], str, Any]], *, ensure_ascii: bool
) -> bytes:
    """The message with the edits made, as JSON (non-ASCII escaped or not)."""
    for path, action, junk in edits:
        if len(path) == 2 and not isinstance(message.get(path[0]), dict):
            continue  # the parent was already replaced by a non-object
        _mutate(message, path, action, copy.deepcopy(junk))  # sampled junk is shared
    return json.dumps(message, ensure_ascii=ensure_ascii).encode()


@FUZZ
@given(st.binary(max_size=2_000))
def test_arbitrary_bytes(value: bytes) -> None:
    _outcome(value)


@FUZZ
@given(json_values)
def test_arbitrary_json_values(value: Any) -> None:
    _outcome(json.dumps(value).encode())


@FUZZ
@given(mutations(max_size=4))
def test_mutations_of_a_valid_message(edits: list[tuple[tuple[str, ...], str, Any]]) -> None:
    _outcome(mutated(good_message(), edits, ensure_ascii=True))


@FUZZ
@given(st.binary(max_size=64), st.integers(min_value=0, max_value=400))
def test_bytes_spliced_into_a_valid_message(junk: bytes, at: int) -> None:
    value = json.dumps(good_message()).encode()
    _outcome(value[:at] + junk + value[at:])
