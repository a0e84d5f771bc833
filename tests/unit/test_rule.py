"""The opt-out rule in every order it can meet: random sets of unsubscribes and removals, with
random times (ties included), applied to the aggregate in every arrival order hypothesis draws."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from domain.identity import AddressKeys
from domain.person import Person, Provenance, address_state, standing
from domain.rule import ChangeKind, Mark, OptOut, fold

T0 = datetime(2026, 11, 1, tzinfo=UTC)
ADA = AddressKeys(b"k" * 32).key_of("ada@example.com")

# Few distinct instants, so that ties are common.
instants = st.integers(min_value=0, max_value=5).map(lambda h: T0 + timedelta(hours=h))
kinds = st.sampled_from([ChangeKind.UNSUBSCRIBED, ChangeKind.UNSUBSCRIBE_REMOVED])
actors = st.sampled_from(["recipient", "user", "system"])
change = st.tuples(kinds, instants, actors, st.uuids(), st.sampled_from(["sales", "marketing"]))
change_sets = st.lists(change, max_size=8, unique_by=lambda c: c[3])


def definition(changes: list[tuple[ChangeKind, datetime, str, uuid.UUID, str]]) -> bool:
    """The rule as the product brief states it, written independently of domain.rule."""
    unsubscribes = [at for kind, at, *_ in changes if kind is ChangeKind.UNSUBSCRIBED]
    removals = [at for kind, at, *_ in changes if kind is ChangeKind.UNSUBSCRIBE_REMOVED]
    if not unsubscribes:
        return False
    return not removals or max(unsubscribes) >= max(removals)


def applied(key: str, changes: list[tuple[ChangeKind, datetime, str, uuid.UUID, str]]) -> Person:
    person = Person(key)
    for kind, at, actor, event_id, source in changes:
        if kind is ChangeKind.UNSUBSCRIBED:
            provenance = Provenance(event_id, source, actor, None, None, "email_link", at)
            person.unsubscribe(provenance, mailbox=ADA)
        else:
            provenance = Provenance(event_id, source, "user", "admin", None, "manual", at, "asked")
            person.remove_unsubscribe(provenance, mailbox=ADA)
    return person


@settings(max_examples=300)
@given(change_sets.flatmap(lambda cs: st.tuples(st.just(cs), st.permutations(cs))))
def test_every_arrival_order_gives_the_rules_answer(drawn: tuple[list, list]) -> None:  # type: ignore[type-arg]
    changes, arrival = drawn
    expected = definition(changes)
    in_order, shuffled = applied("person:p1", changes), applied("person:p1", arrival)
    assert in_order.opted_out == shuffled.opted_out == expected
    assert in_order.own == shuffled.own, "the deciding changes do not depend on arrival order"
    marks = [(kind, Mark(at, event_id, source)) for kind, at, _, event_id, source in arrival]
    assert fold(marks).opted_out == expected


@settings(max_examples=200)
@given(
    change_sets.flatmap(lambda cs: st.tuples(st.just(cs), st.permutations(cs))),
    change_sets,
)
def test_one_mailbox_one_answer_whatever_the_order(
    drawn: tuple[list, list], on_address: list
) -> None:  # type: ignore[type-arg]
    person_changes, arrival = drawn
    address = applied(ADA, on_address)
    answers = set()
    for order in (person_changes, arrival):
        carrier = applied("person:p1", order)
        state = address_state(address, ADA, [carrier])
        answers.add((standing(carrier, {ADA: state}).opted_out, state.opted_out))
    assert len(answers) == 1
    [(person_answer, address_answer)] = answers
    # The address: its own changes plus its recipient's unsubscribes under the person.
    recipients = [
        c for c in person_changes if c[0] is ChangeKind.UNSUBSCRIBED and c[2] == "recipient"
    ]
    assert address_answer == definition(on_address + recipients)
    # The person: their own changes, or the address.
    assert person_answer == (definition(person_changes) or address_answer)
    if address_answer:
        assert person_answer, "no removal on the person undoes the address's opt-out"


def test_c1_a_removal_older_than_the_latest_unsubscribe_arrives_last() -> None:
    at = {h: T0.replace(hour=h) for h in (1, 3, 5)}
    person = applied(
        "person:c1",
        [
            (ChangeKind.UNSUBSCRIBED, at[1], "user", uuid.uuid4(), "sales"),
            (ChangeKind.UNSUBSCRIBED, at[5], "recipient", uuid.uuid4(), "marketing"),
            (ChangeKind.UNSUBSCRIBE_REMOVED, at[3], "user", uuid.uuid4(), "sales"),
        ],
    )
    assert person.opted_out
    assert person.own.unsubscribe is not None and person.own.unsubscribe.source == "marketing"


def test_the_rule_state_merges_like_the_union_of_changes() -> None:
    a = OptOut().unsubscribed(Mark(T0, uuid.uuid4()))
    b = OptOut().removed(Mark(T0 + timedelta(hours=1), uuid.uuid4()))
    assert not a.merged(b).opted_out and a.merged(b) == b.merged(a)
