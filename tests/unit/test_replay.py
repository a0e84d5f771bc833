"""Point-in-time replay equals the state that was current at that instant (hypothesis), on an
in-memory SQLite store: batches of changes are recorded one after another on the real clock, the
live answers are read after each, and the replay at any instant between two batches must give
the answers read after the first of them."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.event_store import environment
from domain.application import Change, ChangeKind, ChangeRecorder
from domain.identity import AddressKeys, person_key
from domain.person import Provenance, Standing
from projections.replay import By, key_at, log_at, whole_log

KEYS = AddressKeys(b"r" * 32)
PERSONS = [person_key(f"p{i}") for i in range(4)]
EMAILS = ["ada@example.com", "bob@example.com", "cy@example.com"]
ADDRESSES = [KEYS.key_of(email) for email in EMAILS]
SALESFORCE_IDS = ["0035g00000AbCdEAAV", "00Q5g00000XyZaBEAV"]
BASE = datetime(2026, 6, 1, tzinfo=UTC)  # changes occurred in the past, in any order


@st.composite
def changes(draw: st.DrawFn) -> Change:
    kind = draw(st.sampled_from(list(ChangeKind)))
    email = draw(st.sampled_from([None, *EMAILS]))
    person = draw(st.sampled_from(PERSONS if email is None else [None, *PERSONS]))
    mailbox = KEYS.key_of(email) if email else None
    key = person or mailbox
    assert key is not None
    actor = "user" if kind is ChangeKind.UNSUBSCRIBE_REMOVED else draw(
        st.sampled_from(["recipient", "user", "system"])
    )  # fmt: skip
    occurred = BASE + timedelta(minutes=draw(st.integers(0, 30)))  # ties included
    source = draw(st.sampled_from(["sales", "marketing", "salesforce"]))
    provenance = Provenance(
        uuid.uuid4(), source, actor, "admin" if actor == "user" else None, None, "api", occurred,
        "asked" if kind is ChangeKind.UNSUBSCRIBE_REMOVED else None,
    )  # fmt: skip
    salesforce_id = (
        draw(st.sampled_from(SALESFORCE_IDS))
        if kind is ChangeKind.PERSON_LINKED
        else draw(st.sampled_from([None, *SALESFORCE_IDS]))
        if kind is ChangeKind.UNSUBSCRIBED
        else None
    )
    return Change(kind, key, provenance, mailbox, email, salesforce_id)


@dataclass
class Live:
    """What a reader saw after a batch: the instants around it and every key's answer."""

    recorded_by: datetime  # every event of the batch is stamped before this
    answers: dict[str, Standing]
    known: set[str]


def share_of(span: int, millionths: int) -> int:
    return span * millionths // 10**6


def now() -> datetime:
    return datetime.now(UTC)


def after(moment: datetime) -> datetime:
    """The first clock reading past `moment` (a few microseconds away): instants between two
    batches then exist."""
    while (reading := now()) <= moment:
        pass
    return reading


def stamps(log: ChangeRecorder, after_id: int) -> list[datetime]:
    """The timestamps of the events stored after notification `after_id`."""
    stored = log.recorder.select_notifications(after_id, 1000, inclusive_of_start=False)
    return [log.mapper.to_domain_event(n).timestamp for n in stored]


def read_live(log: ChangeRecorder) -> tuple[dict[str, Standing], set[str]]:
    answers = {key: log.standing(key)[1] for key in PERSONS + ADDRESSES}
    known = {k for k in PERSONS + ADDRESSES if log.person(k) is not None or log.carriers(k)}
    return answers, known


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    batches=st.lists(st.lists(changes(), min_size=1, max_size=4), min_size=1, max_size=6),
    data=st.data(),
)
def test_replay_at_an_instant_equals_the_state_current_then(
    batches: list[list[Change]], data: st.DataObject
) -> None:
    log = ChangeRecorder(env=environment("sqlite:///:memory:", create_table=True))
    history = [Live(now(), *read_live(log))]  # before the first batch: nothing known
    first_stamps = []  # the earliest event timestamp of each batch
    for batch in batches:
        after(history[-1].recorded_by)
        known = log.recorder.max_notification_id() or 0
        log.record(batch)
        first_stamps.append(min(stamps(log, known)))
        history.append(Live(now(), *read_live(log)))
    first_stamps.append(history[-1].recorded_by + timedelta(days=1))

    for _ in range(4):
        k = data.draw(st.integers(0, len(batches)), label="after batch")
        # Any instant from the end of batch k to the first stamp of batch k + 1 (exclusive).
        low, high = history[k].recorded_by, first_stamps[k]
        span = (high - low) // timedelta(microseconds=1)
        assert span >= 1, "`after` leaves time between a reading and the next batch"
        offset = data.draw(
            st.sampled_from([0, span - 1]) | st.integers(0, 999_999).map(partial(share_of, span)),
            label="microseconds after the end of batch k (the edges, or anywhere between)",
        )
        as_of = low + timedelta(microseconds=offset)
        key = data.draw(st.sampled_from(PERSONS + ADDRESSES), label="key")
        live = history[k]

        replayed = key_at(log, key, as_of)
        assert replayed.answer.opted_out == live.answers[key].opted_out
        assert replayed.answer.known == (key in live.known)
        moment, _ = whole_log(log, as_of)
        assert moment.standing(key) == live.answers[key]  # own marks, addresses, Salesforce id
        counted = log_at(log, as_of)
        persons = [live.answers[p].opted_out for p in PERSONS if p in live.known]
        addresses = [live.answers[a].opted_out for a in ADDRESSES if a in live.known]
        assert (counted.persons.opted_out, counted.persons.subscribed) == (
            sum(persons),
            len(persons) - sum(persons),
        )
        assert (counted.addresses.opted_out, counted.addresses.subscribed) == (
            sum(addresses),
            len(addresses) - sum(addresses),
        )
    log.close()


def test_recorded_and_occurred_differ_for_a_late_arriving_older_change() -> None:
    """An unsubscribe that occurred on day 1 but reached the store on day 3's replay instant
    is absent 'as known then' and present 'as occurred'."""
    log = ChangeRecorder(env=environment("sqlite:///:memory:", create_table=True))
    occurred = now() - timedelta(days=2)
    before_arrival = after(now())
    late = Provenance(uuid.uuid4(), "sales", "user", "rep", None, "manual", occurred)
    after(before_arrival)
    log.record([Change(ChangeKind.UNSUBSCRIBED, person_key("late"), late)])
    known_then = key_at(log, person_key("late"), before_arrival)
    as_occurred = key_at(log, person_key("late"), before_arrival, By.OCCURRED)
    assert not known_then.answer.known and not known_then.answer.opted_out
    assert as_occurred.answer.known and as_occurred.answer.opted_out
    just_before = occurred - timedelta(microseconds=1)
    assert not key_at(log, person_key("late"), just_before, By.OCCURRED).answer.opted_out
    assert key_at(log, person_key("late"), occurred, By.OCCURRED).answer.opted_out
    (stamp,) = stamps(log, 0)  # the change (which registers the person)
    assert key_at(log, person_key("late"), stamp).answer.opted_out
    assert not key_at(log, person_key("late"), stamp - timedelta(microseconds=1)).answer.known
    log.close()


def test_a_change_never_occurs_after_it_is_recorded() -> None:
    """Within the clock skew the contract lets through, a future time is capped at recording:
    replay by occurred time can never count a change that was not yet recorded."""
    log = ChangeRecorder(env=environment("sqlite:///:memory:", create_table=True))
    future = Provenance(
        uuid.uuid4(), "sales", "user", "rep", None, "manual", now() + timedelta(minutes=4)
    )
    log.record([Change(ChangeKind.UNSUBSCRIBED, person_key("early"), future)])
    (change,) = log.all_changes()
    assert change.occurred_at <= change.timestamp
    log.close()
