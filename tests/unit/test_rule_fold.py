"""The read models' page-at-a-time fold of the opt-out rule (`projections.rule_fold`, used by the
per-person state) gives what `domain.rule` gives folding every change, one after another: on
random histories with few instants (ties common), repeated changes, and random page splits."""

from __future__ import annotations

import uuid
from collections.abc import Collection
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from domain.identity import AddressKeys, aggregate_id, person_key
from domain.rule import ChangeKind, Mark, OptOut, fold, later
from projections.per_person import PERSON_STATE, PersonStates
from projections.rule_fold import Order, offer, opted_out_since, order_of
from projections.stored import (
    Change,
    Fact,
    PersonLinked,
    Registered,
    Stamp,
    StoredId,
    Unsubscribed,
    UnsubscribeRemoved,
)
from projections.views import Row, Table, Writes

T0 = datetime(2026, 11, 1, tzinfo=UTC)
instants = st.integers(min_value=0, max_value=4).map(lambda h: T0 + timedelta(hours=h))
kinds = st.sampled_from([ChangeKind.UNSUBSCRIBED, ChangeKind.UNSUBSCRIBE_REMOVED])
# Few event ids too: a change that arrives twice, and ties of time broken by the id.
event_ids = st.sampled_from(
    [uuid.UUID(int=n * 0x1F3B_0000_0000_0000_0000_0000_0001) for n in range(6)]
)
marks = st.builds(Mark, instants, event_ids, st.sampled_from(["sales", "marketing"]))
histories = st.lists(st.tuples(kinds, marks), max_size=12)


def paged(history: list[tuple[ChangeKind, Mark]], cuts: list[int]) -> OptOut:
    """`history` folded a page at a time as the per-person state folds it: each page's latest
    unsubscribe and removal by `order_of`, then merged into the state with `later`."""
    state, start = OptOut(), 0
    for end in [*sorted(cuts), len(history)]:
        latest: dict[ChangeKind, tuple[Order, Mark]] = {}
        for kind, mark in history[start:end]:
            offer(latest, kind, order_of(mark.occurred_at, mark.event_id), mark)
        if ChangeKind.UNSUBSCRIBED in latest:
            state = OptOut(
                later(state.unsubscribe, latest[ChangeKind.UNSUBSCRIBED][1]), state.removal
            )
        if ChangeKind.UNSUBSCRIBE_REMOVED in latest:
            state = OptOut(
                state.unsubscribe, later(state.removal, latest[ChangeKind.UNSUBSCRIBE_REMOVED][1])
            )
        start = max(start, end)
    return state


@settings(max_examples=400)
@given(histories.flatmap(lambda h: st.tuples(st.just(h), st.lists(st.integers(0, len(h))))))
def test_a_page_at_a_time_gives_the_rules_fold(drawn: tuple[list, list[int]]) -> None:
    history, cuts = drawn
    assert paged(history, cuts) == fold(history)


@given(marks, marks)
def test_order_of_orders_as_later_does(current: Mark, candidate: Mark) -> None:
    later_one = order_of(candidate.occurred_at, candidate.event_id) > order_of(
        current.occurred_at, current.event_id
    )
    assert (later(current, candidate) is candidate) == later_one


@settings(max_examples=400)
@given(histories, st.one_of(st.none(), marks))
def test_opted_out_since_is_the_states_answer(history: list, recipient: Mark | None) -> None:
    own = fold(history)
    state = own if recipient is None else own.unsubscribed(recipient)
    expected = state.unsubscribe.occurred_at if state.opted_out and state.unsubscribe else None
    assert opted_out_since(own, recipient) == expected


# The per-person state read model itself: any split of a log into pages gives the rows that one
# event a page gives (where each page's latest is the change itself: the rule's sequential fold).
KEYS = AddressKeys(b"r" * 32)
PERSONS = [person_key(f"p{n}") for n in range(3)]
MAILBOXES = [KEYS.key_of(f"m{n}@example.com") for n in range(2)]
change_kinds = st.sampled_from([Unsubscribed, UnsubscribeRemoved, PersonLinked])
changes = st.tuples(
    st.sampled_from(PERSONS + MAILBOXES),
    change_kinds,
    instants,
    event_ids,
    st.sampled_from(["sales", "marketing", "salesforce"]),
    st.sampled_from(["recipient", "user", "system"]),
    st.one_of(st.none(), st.sampled_from(MAILBOXES)),
    st.one_of(st.none(), st.sampled_from(["0035g00000AbCdEAAV", "00Q5g00000AbCdEAAV"])),
)


def log_of(drawn: list[tuple]) -> list[tuple[int, Fact]]:
    versions: dict[str, int] = {}
    log: list[tuple[int, Fact]] = []

    def stamp(at: datetime) -> Stamp:
        return Stamp(at.isoformat())

    for key, kind, at, event_id, source, actor, mailbox, salesforce_id in drawn:
        person_id = aggregate_id(key).hex
        if key not in versions:
            versions[key] = 1
            log.append(
                (len(log) + 1, Registered(person_id=person_id, version=1, stamp=stamp(T0), key=key))
            )
        versions[key] += 1
        fact: Change = kind(
            person_id=person_id,
            version=versions[key],
            stamp=stamp(T0 + timedelta(days=1)),
            event=StoredId(event_id),
            source=source,
            actor_kind=actor,
            actor_id="rep-1",
            actor_name=None,
            channel="manual",
            occurred=stamp(at),
            reason=None,
            mailbox=mailbox,
            salesforce_id=salesforce_id,
            class_version=Change.CLASS_VERSION,
        )
        log.append((len(log) + 1, fact))
    return log


def built(log: list[tuple[int, Fact]], cuts: list[int]) -> dict[Row, Row]:
    held: dict[Row, Row] = {}

    def rows(table: Table, column: str, values: Collection[Any]) -> list[Row]:
        assert table is PERSON_STATE and column == "person_id"
        return [held[(value,)] for value in values if (value,) in held]

    model, start = PersonStates(), 0
    for end in [*sorted(cuts), len(log)]:
        if end > start:
            writes: Writes = model.apply(log[start:end], rows)
            added = writes.inserts.get(PERSON_STATE.name, {})
            assert not added.keys() & held.keys(), "inserted: a row the table holds"
            held.update(added)
            held.update(writes.upserts.get(PERSON_STATE.name, {}))
            start = end
    return {key: row[:-2] + row[-1:] for key, row in held.items()}  # not the position column


@settings(max_examples=200, deadline=None)
@given(
    st.lists(changes, max_size=14).flatmap(
        lambda c: st.tuples(st.just(c), st.lists(st.integers(0, 2 * len(c) + 3)))
    )
)
def test_the_per_person_state_is_the_same_whatever_the_pages(drawn: tuple[list, list[int]]) -> None:
    drawn_changes, cuts = drawn
    log = log_of(drawn_changes)
    one_a_page = built(log, list(range(1, len(log))))
    assert built(log, cuts) == one_a_page
