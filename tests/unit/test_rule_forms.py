"""The rule's marks and states keep their stored forms: in a snapshot (eventsourcing's tags, the
same with the store's msgspec transcoder) and in a read model's doc (msgspec's JSON), and they
read back equal — whatever class makes them in memory (session 7 made them msgspec structs)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone

import msgspec
from eventsourcing.application import Application
from eventsourcing.persistence import JSONTranscoder
from hypothesis import given
from hypothesis import strategies as st

from adapters.event_store import FastJSONTranscoder
from domain.rule import Mark, MarkAsDict, OptOut, OptOutAsDict

AT = datetime(2026, 3, 1, 9, 30, 0, 5, tzinfo=UTC)
ID = uuid.UUID(int=7)
TAGGED_MARK = (
    '{"_type_":"optout_mark","_data_":{"occurred_at":{"_type_":"datetime_iso",'
    '"_data_":"2026-03-01T09:30:00.000005+00:00"},"event_id":{"_type_":"uuid_hex",'
    '"_data_":"00000000000000000000000000000007"},"source":"sales"}}'
)


def transcoders() -> list[JSONTranscoder]:
    app = Application[uuid.UUID](env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
    found: list[JSONTranscoder] = [FastJSONTranscoder(), JSONTranscoder()]
    for transcoder in found:
        app.register_transcodings(transcoder)
        transcoder.register(MarkAsDict())
        transcoder.register(OptOutAsDict())
    return found


def test_a_snapshot_tags_marks_and_states_as_before() -> None:
    state = {"own": OptOut(Mark(AT, ID, "sales")), "by_recipient": {"k": Mark(AT, ID, "sales")}}
    expected = (
        f'{{"own":{{"_type_":"optout_state","_data_":{{"unsubscribe":{TAGGED_MARK},'
        f'"removal":null}}}},"by_recipient":{{"k":{TAGGED_MARK}}}}}'
    ).encode()
    for transcoder in transcoders():
        assert transcoder.encode(state) == expected
        assert transcoder.decode(expected) == state


def test_a_read_models_doc_writes_marks_as_before() -> None:
    state = OptOut(Mark(AT, ID, "sales"), Mark(AT, ID))
    doc = msgspec.json.encode(state)
    assert doc == (
        b'{"unsubscribe":{"occurred_at":"2026-03-01T09:30:00.000005Z",'
        b'"event_id":"00000000-0000-0000-0000-000000000007","source":"sales"},'
        b'"removal":{"occurred_at":"2026-03-01T09:30:00.000005Z",'
        b'"event_id":"00000000-0000-0000-0000-000000000007","source":""}}'
    )
    assert msgspec.json.decode(doc, type=OptOut) == state


marks = st.builds(
    Mark,
    st.datetimes(timezones=st.sampled_from([UTC, timezone(timedelta(hours=-5))])),
    st.uuids(),
    st.text(max_size=10),
)


@given(st.one_of(st.none(), marks), st.one_of(st.none(), marks))
def test_states_round_trip_and_compare_by_value(
    unsubscribe: Mark | None, removal: Mark | None
) -> None:
    state = OptOut(unsubscribe, removal)
    snapshot = {"own": state, "by_recipient": {"k": removal}}  # a person's snapshot's shape
    for transcoder in transcoders():
        assert transcoder.decode(transcoder.encode(snapshot)) == snapshot
    again = msgspec.json.decode(msgspec.json.encode(state), type=OptOut)
    assert again == state and hash(again) == hash(state)
    assert (
        OptOut(unsubscribe=unsubscribe, removal=removal)
        == state
        != OptOut(Mark(AT, ID, "other"), removal)
    )
