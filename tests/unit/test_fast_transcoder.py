"""The store's msgspec transcoder writes exactly what eventsourcing's JSONTranscoder writes."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest
from eventsourcing.application import Application
from eventsourcing.persistence import JSONTranscoder
from hypothesis import given
from hypothesis import strategies as st

from adapters.event_store import FastJSONTranscoder
from domain.person import Person, Provenance


def transcoders() -> tuple[FastJSONTranscoder, JSONTranscoder]:
    app = Application[uuid.UUID](env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
    fast, reference = FastJSONTranscoder(), JSONTranscoder()
    app.register_transcodings(fast)
    app.register_transcodings(reference)
    return fast, reference


@given(
    name=st.text(),
    reason=st.none() | st.text(),
    offset_minutes=st.integers(-14 * 60, 14 * 60),
)
def test_event_states_encode_byte_for_byte_like_the_reference(
    name: str, reason: str | None, offset_minutes: int
) -> None:
    fast, reference = transcoders()
    at = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=timezone(timedelta(minutes=offset_minutes)))
    person = Person("person:p")
    person.unsubscribe(Provenance(uuid.uuid4(), "sales", "user", "u-1", name, "manual", at, reason))
    for event in person.collect_events():
        state = dict(vars(event))
        del state["originator_id"], state["originator_version"]
        assert fast.encode(state) == reference.encode(state)
        assert reference.decode(fast.encode(state)) == state
        assert fast.decode(fast.encode(state)) == state


@given(
    value=st.recursive(
        st.none()
        | st.booleans()
        | st.integers()
        | st.text()
        | st.uuids()
        | st.datetimes(timezones=st.just(UTC)),
        lambda inner: (
            st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
        ),
        max_leaves=12,
    )
)
def test_states_decode_like_the_reference(value: object) -> None:
    fast, reference = transcoders()
    encoded = reference.encode({"value": value})
    assert fast.decode(encoded) == reference.decode(encoded)


def test_nested_values_fall_back_to_the_reference_encoder() -> None:
    fast, reference = transcoders()
    state = {"ids": [uuid.uuid4()], "at": {"when": datetime.now(UTC)}, "ratio": float("nan")}
    assert fast.encode(state) == reference.encode(state)
    decoded = fast.decode(fast.encode(state))
    assert decoded["ids"] == state["ids"] and decoded["at"] == state["at"]
    assert decoded["ratio"] != decoded["ratio"], "NaN: read by the reference decoder"


def test_types_the_reference_refuses_are_refused_too() -> None:
    fast, _ = transcoders()
    with pytest.raises(TypeError):
        fast.encode({"raw": b"bytes"})


def test_the_store_encodes_with_its_own_encoder() -> None:
    # A merge once dropped the override silently: everything still passed, at half the speed.
    assert FastJSONTranscoder.encode is not JSONTranscoder.encode
    assert FastJSONTranscoder.decode is not JSONTranscoder.decode


def test_every_kind_of_person_event_encodes_byte_for_byte_like_the_reference() -> None:
    fast, reference = transcoders()
    at = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)

    def provenance(kind: str = "user") -> Provenance:
        return Provenance(uuid.uuid4(), "sales", kind, "u-1", "Ann", "manual", at, "asked")

    person = Person.register("person:p")
    person.unsubscribe(provenance("recipient"), mailbox="m:abc", salesforce_id="0038d00000ABCDEAAA")
    person.link(provenance(), "0038d00000ABCDEAAA", mailbox="m:abc")
    person.remove_unsubscribe(provenance())
    person.unsubscribe(provenance())
    person.push_accepted(
        record_id="0038d00000ABCDEAAA",
        object_type="Contact",
        field="HasOptedOutOfEmail",
        written_id="0038d00000ABCDEAAA",
        converted_contact_id=None,
        accepted_at=at,
    )
    person.push_refused(
        record_id="0038d00000ABCDEAAA",
        object_type="Contact",
        code="X",
        message="m",
        will_retry=True,
    )
    events = Person.register("person:q").collect_events() + person.collect_events()
    assert len(events) == 7 and len({type(event) for event in events}) == 7
    for event in events:
        state = dict(vars(event))
        assert fast.encode(state) == reference.encode(state), type(event).__name__
        assert fast.decode(fast.encode(state)) == reference.decode(reference.encode(state))
