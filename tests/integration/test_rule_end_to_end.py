"""The rule and the identity model end to end: messages through Kafka, the ingest, and the
answers `optout-sync person` gives for an id and for an email."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import msgspec
import pytest

from adapters import dead_letter
from adapters.inbound import Actor, ChangeV1, PersonRef
from adapters.settings import Settings
from tests.factories import good_change
from tests.integration.ingest_harness import keyed, produce, reader
from tests.integration.test_erasure import optout_sync
from tests.integration.test_ingest import run_until_caught_up

pytestmark = [pytest.mark.kafka]
T = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
ADMIN = Actor(kind="user", id="admin-1", name="Ann Admin")
REP = Actor(kind="user", id="rep-7", name="Rita Rep")


def removal(person: PersonRef, at: datetime) -> ChangeV1:
    return good_change(
        type="unsubscribe_removed",
        person=person,
        actor=ADMIN,
        channel="manual",
        reason="asked",
        occurred_at=at,
    )


def mailbox_case(n: int, removed_on: str) -> tuple[list[ChangeV1], list[ChangeV1]]:
    """(the address's changes, the person's changes) of one mailbox case."""
    email = f"ada{n}@example.com"
    on_address = [
        good_change(
            person=PersonRef(email=email),
            source="marketing",
            actor=Actor(kind="recipient"),
            occurred_at=T,
        )
    ]
    carrier = PersonRef(person_id=f"p-ada{n}", email=email.upper())
    on_person = [good_change(person=carrier, source="sales", actor=REP, occurred_at=T)]
    later = T + timedelta(hours=1)
    if removed_on == "person":
        on_person.append(removal(carrier, later))
    else:
        on_address.append(removal(PersonRef(email=email), later))
    return on_address, on_person


CASES = [  # (n, which side arrives first, where the removal is, person's answer, address's)
    (1, "email", "person", True, True),
    (2, "id", "person", True, True),
    (3, "email", "address", True, False),
    (4, "id", "address", True, False),
]


def test_one_mailbox_one_answer_in_every_order(config: Settings) -> None:
    cases = {n: mailbox_case(n, removed_on) for n, _, removed_on, *_ in CASES}
    first = [c for n, side, *_ in CASES for c in cases[n][0 if side == "email" else 1]]
    second = [c for n, side, *_ in CASES for c in cases[n][1 if side == "email" else 0]]
    for phase in (first, second):
        produce(config, keyed(phase))
        run_until_caught_up(config)
    for n, _, _, person_answer, address_answer in CASES:
        person = json.loads(optout_sync(config, "person", f"p-ada{n}", "--json").stdout)
        found = json.loads(optout_sync(config, "person", f"Ada{n}@Example.com", "--json").stdout)
        assert person["opted_out"] is person_answer, n
        assert found["address"]["opted_out"] is address_answer, n
        assert [p["person_key"] for p in found["persons"]] == [f"person:p-ada{n}"], n
        assert found["persons"][0]["opted_out"] is person_answer, n
        by_address = person["opted_out_by_addresses"]
        assert by_address == ([found["address"]["person_key"]] if address_answer else []), n


def test_the_same_change_under_two_keys_is_stored_once(config: Settings) -> None:
    by_id = good_change(person=PersonRef(person_id="p-twice", email="twice@example.com"))
    by_email = msgspec.structs.replace(by_id, person=PersonRef(email="twice@example.com"))
    produce(config, keyed([by_id, by_email]))
    worker = run_until_caught_up(config)
    assert (worker.stats.recorded, worker.stats.duplicates) == (1, 1)
    store = reader(config)
    try:
        assert [c.event_id for c in store.all_changes()] == [by_id.event_id]
    finally:
        store.close()


def test_c2_a_removal_dated_in_the_future_is_refused_and_never_outranks_an_unsubscribe(
    config: Settings,
) -> None:
    person = PersonRef(person_id="c2")
    typo = removal(person, datetime(2099, 11, 2, tzinfo=UTC))
    unsubscribe = good_change(person=person, occurred_at=datetime(2026, 11, 2, tzinfo=UTC))
    produce(config, keyed([typo]))
    run_until_caught_up(config)
    produce(config, keyed([unsubscribe]))
    run_until_caught_up(config)
    state = json.loads(optout_sync(config, "person", "c2", "--json").stdout)
    assert state["opted_out"] is True and state["latest_removal"] is None
    letters = [
        letter for letter in dead_letter.read(config) if letter.origin_topic == config.topic_inbound
    ]
    assert [letter.code for letter in letters] == ["future_timestamp"]


def test_a_time_within_the_skew_is_stored_capped_and_a_tie_goes_to_the_unsubscribe(
    config: Settings,
) -> None:
    soon = datetime.now(UTC) + timedelta(seconds=60)  # within the default five minutes
    produce(
        config,
        keyed(
            [
                good_change(person=PersonRef(person_id="soon"), occurred_at=soon),
                removal(PersonRef(person_id="tie"), T),
                good_change(person=PersonRef(person_id="tie"), occurred_at=T),
            ]
        ),
    )
    run_until_caught_up(config)
    soon_state = json.loads(optout_sync(config, "person", "soon", "--json").stdout)
    [entry] = soon_state["history"]
    occurred = datetime.fromisoformat(entry["occurred_at"])
    assert occurred <= datetime.fromisoformat(entry["recorded_at"]) < soon
    tie = json.loads(optout_sync(config, "person", "tie", "--json").stdout)
    assert tie["opted_out"] is True
