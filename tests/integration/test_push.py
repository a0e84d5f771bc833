"""The live push end to end: changes produced to Kafka, the ingest, the pusher, and the sandbox
through the unmodified simple-salesforce client — on SQLite and on PostgreSQL."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from adapters.inbound import Actor, PersonRef
from adapters.salesforce import BudgetSpent
from adapters.settings import Settings, load
from consumers import bootstrap
from consumers.pusher import PUSHER, Pusher, PushStats
from domain.identity import person_key
from projections.person_state import HistoryEntry, PersonState, state_of
from sandbox import Sandbox, running_sandbox
from tests.factories import good_change
from tests.integration.ingest_harness import (
    REPO,
    Workers,
    dying_with_the_test,
    env_of,
    keyed,
    produce,
    reader,
    wait_for,
)
from tests.integration.test_ingest import run_until_caught_up
from tests.salesforce.conftest import flag, org_env

pytestmark = [pytest.mark.kafka]
PUSH_CALLS = "composite/sobjects"
IDLE_S = 3.0  # the pusher exits once nothing was read or pushed for this long
ADMIN = Actor(kind="user", id="admin-1", name="Ann Admin")


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    with running_sandbox() as running:
        yield running


def with_org(config: Settings, sandbox: Sandbox) -> Settings:
    return load({**env_of(config), **org_env(sandbox)})


def push(config: Settings, sandbox: Sandbox) -> tuple[Pusher, PushStats]:
    """The pusher, in-process, until idle."""
    pusher = bootstrap.pusher(with_org(config, sandbox))
    try:
        return pusher, pusher.run(idle_exit_s=IDLE_S)
    finally:
        pusher.store.close()


def ingest(config: Settings, *changes: object) -> None:
    produce(config, keyed(changes))  # type: ignore[arg-type]
    run_until_caught_up(config).store.close()


def state(config: Settings, person_id: str) -> PersonState:
    store = reader(config)
    try:
        found = state_of(store, person_key(person_id))
    finally:
        store.close()
    assert found is not None, person_id
    return found


def outcomes(found: PersonState, change: str) -> list[HistoryEntry]:
    return [entry for entry in found.history if entry.change == change]


def contact(sandbox: Sandbox, name: str) -> str:
    return sandbox.insert("Contact", LastName=name, Email=f"{name.lower()}@push.example")


def test_an_unsubscribe_produced_to_kafka_is_checked_in_salesforce_with_proof(
    config: Settings, sandbox: Sandbox
) -> None:
    record = contact(sandbox, "Ada")
    ingest(config, good_change(person=PersonRef(person_id="p-ada", salesforce_id=record)))
    assert not flag(sandbox, record)
    calls = sandbox.api_calls(PUSH_CALLS)

    done = subprocess.run(  # the verb, as an operator runs it
        [sys.executable, "-m", "consumers", "push", "--idle-exit", str(IDLE_S), "--json"],
        cwd=REPO,
        env=env_of(config, **org_env(sandbox)),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["accepted"] == 1
    assert flag(sandbox, record)
    assert sandbox.api_calls(PUSH_CALLS) == calls + 1
    [accepted] = outcomes(state(config, "p-ada"), "salesforce_accepted")
    assert (accepted.record_id, accepted.written_id, accepted.field) == (
        record,
        record,
        "HasOptedOutOfEmail",
    )
    assert state(config, "p-ada").opted_out  # an outcome never changes the answer


def test_a_removed_unsubscribe_is_never_pushed(config: Settings, sandbox: Sandbox) -> None:
    record = contact(sandbox, "Rem")
    who = PersonRef(person_id="p-rem", salesforce_id=record)
    unsubscribe = good_change(person=who)
    removal = good_change(
        type="unsubscribe_removed",
        person=who,
        actor=ADMIN,
        channel="manual",
        reason="asked to be put back",
        occurred_at=unsubscribe.occurred_at.replace(hour=10),
    )
    ingest(config, unsubscribe, removal)
    calls = sandbox.api_calls(PUSH_CALLS)
    _, stats = push(config, sandbox)
    assert stats.written == 0
    assert sandbox.api_calls(PUSH_CALLS) == calls
    assert not flag(sandbox, record)
    assert not outcomes(state(config, "p-rem"), "salesforce_accepted")


def test_a_pending_link_is_pushed_once_a_person_linked_arrives(
    config: Settings, sandbox: Sandbox
) -> None:
    record = contact(sandbox, "Pend")
    ingest(config, good_change(person=PersonRef(person_id="p-pend", email="pend@push.example")))
    calls = sandbox.api_calls(PUSH_CALLS)
    push(config, sandbox)
    assert sandbox.api_calls(PUSH_CALLS) == calls
    [waiting] = outcomes(state(config, "p-pend"), "push_waiting")
    assert waiting.reason == "no_salesforce_id"
    push(config, sandbox)  # the reason is recorded when it changes, not on every pass
    assert len(outcomes(state(config, "p-pend"), "push_waiting")) == 1

    linked = good_change(
        type="person_linked",
        person=PersonRef(person_id="p-pend", salesforce_id=record),
        actor=ADMIN,
        channel="manual",
    )
    ingest(config, linked)
    push(config, sandbox)
    assert flag(sandbox, record)
    assert [e.record_id for e in outcomes(state(config, "p-pend"), "salesforce_accepted")] == [
        record
    ]


def test_a_person_opted_out_through_a_carried_address_gets_their_own_record_pushed(
    config: Settings, sandbox: Sandbox
) -> None:
    record = contact(sandbox, "Carrier")
    linked = good_change(
        type="person_linked",
        person=PersonRef(person_id="p-car", email="car@push.example", salesforce_id=record),
        actor=ADMIN,
        channel="manual",
    )
    by_recipient = good_change(person=PersonRef(email="CAR@push.example"), source="marketing")
    ingest(config, linked, by_recipient)
    push(config, sandbox)
    assert flag(sandbox, record)
    found = state(config, "p-car")
    assert found.opted_out and not found.own_opted_out
    assert [e.record_id for e in outcomes(found, "salesforce_accepted")] == [record]


def test_a_converted_lead_is_written_through_its_contact_and_both_are_named(
    config: Settings, sandbox: Sandbox
) -> None:
    lead = sandbox.insert("Lead", LastName="Conv", Company="Acme", Email="conv@push.example")
    converted_to = contact(sandbox, "Conv")
    sandbox.convert_lead(lead, converted_to)
    ingest(config, good_change(person=PersonRef(person_id="p-conv", salesforce_id=lead)))
    push(config, sandbox)
    assert flag(sandbox, converted_to)
    [accepted] = outcomes(state(config, "p-conv"), "salesforce_accepted")
    assert (accepted.record_id, accepted.written_id) == (lead, converted_to)
    assert converted_to in (accepted.reason or "")


def test_a_restarted_pusher_resumes_from_its_position_and_pushes_nothing_twice(
    config: Settings, sandbox: Sandbox
) -> None:
    records = [contact(sandbox, f"Re{n}") for n in range(3)]
    ingest(
        config,
        *(
            good_change(person=PersonRef(person_id=f"p-re{n}", salesforce_id=record))
            for n, record in enumerate(records)
        ),
    )
    calls = sandbox.api_calls(PUSH_CALLS)
    first, stats = push(config, sandbox)
    assert (stats.accepted, sandbox.api_calls(PUSH_CALLS)) == (3, calls + 1)  # one batch
    assert all(flag(sandbox, record) for record in records)

    second, stats = push(config, sandbox)  # restarted: nothing new
    assert (stats.written, sandbox.api_calls(PUSH_CALLS)) == (0, calls + 1)
    assert second.position == first.position > 0

    late = contact(sandbox, "Late")
    ingest(config, good_change(person=PersonRef(person_id="p-late", salesforce_id=late)))
    third, stats = push(config, sandbox)
    assert (stats.written, sandbox.api_calls(PUSH_CALLS)) == (1, calls + 2)
    assert flag(sandbox, late)
    store = reader(config)
    try:
        assert store.position(PUSHER) == third.position > second.position
    finally:
        store.close()
    for n in range(3):
        assert len(outcomes(state(config, f"p-re{n}"), "salesforce_accepted")) == 1


def test_a_locked_row_and_an_unavailable_org_are_retried_with_each_attempt_in_the_history(
    config: Settings, sandbox: Sandbox
) -> None:
    locked, fine, later = (contact(sandbox, name) for name in ("Lock", "Fine", "Down"))
    sandbox.add_fault("unable_to_lock_row", record_ids=[locked], count=1)
    sandbox.add_fault("server_unavailable", path=PUSH_CALLS, count=1)
    ingest(
        config,
        *(
            good_change(person=PersonRef(person_id=f"p-{name}", salesforce_id=record))
            for name, record in (("lock", locked), ("fine", fine), ("down", later))
        ),
    )
    _, stats = push(config, sandbox)
    assert all(flag(sandbox, record) for record in (locked, fine, later))
    assert stats.accepted == 3 and stats.retried >= 1
    history = state(config, "p-lock").history
    refusals = [e for e in history if e.change == "salesforce_refused"]
    assert refusals and all("retried later" in (e.reason or "") for e in refusals)
    assert history[-1].change == "salesforce_accepted"


def test_a_spent_budget_stops_the_calls_and_says_so_once_in_the_history(
    config: Settings, sandbox: Sandbox
) -> None:
    first, second = contact(sandbox, "Budget"), contact(sandbox, "Over")
    ingest(config, good_change(person=PersonRef(person_id="p-budget", salesforce_id=first)))
    ingest(config, good_change(person=PersonRef(person_id="p-over", salesforce_id=second)))
    calls = sandbox.api_calls()
    # Two describe calls find the field, one push call: then the budget is spent.
    budget = load({**env_of(config), **org_env(sandbox, OPTOUT_SALESFORCE_DAILY_BUDGET="3")})
    pusher = bootstrap.pusher(budget)
    pusher.batch = 1  # one person a call, so the second meets the spent budget
    try:
        stats = pusher.run(idle_exit_s=IDLE_S)
        pusher.run(idle_exit_s=1.0)  # still paused: no call, no second waiting record
    finally:
        pusher.store.close()
    assert sandbox.api_calls() - calls == 3
    assert (stats.accepted, flag(sandbox, first), flag(sandbox, second)) == (1, True, False)
    [waiting] = outcomes(state(config, "p-over"), "push_waiting")
    assert (waiting.reason or "").startswith("budget_spent")
    assert pusher.paused_until > pusher.clock() + 3600  # until a call leaves the 24-hour window


def start_pusher(config: Settings, sandbox: Sandbox, log_path: Path) -> subprocess.Popen[bytes]:
    with log_path.open("ab") as log:
        return subprocess.Popen(
            dying_with_the_test([sys.executable, "-m", "consumers", "-v", "push"]),
            cwd=REPO,
            env=env_of(config, **org_env(sandbox)),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
        )


def test_one_pusher_is_active_per_store_and_a_second_takes_over_when_it_dies(
    config: Settings, sandbox: Sandbox, tmp_path: Path
) -> None:
    logs = [tmp_path / "pusher-1.log", tmp_path / "pusher-2.log"]

    def said(n: int, text: str) -> Callable[[], bool]:
        return lambda: text in logs[n].read_text(errors="replace")

    def tails() -> str:
        return "\n".join(f"--- {p.name} ---\n{p.read_text(errors='replace')[-3000:]}" for p in logs)

    calls = sandbox.api_calls(PUSH_CALLS)
    first = start_pusher(config, sandbox, logs[0])
    processes = [first]
    try:
        wait_for(said(0, "this is the store's active pusher"), 120, "the first pusher", tails)
        second = start_pusher(config, sandbox, logs[1])
        processes.append(second)
        wait_for(said(1, "waiting to take over"), 120, "the second pusher to wait", tails)

        before = contact(sandbox, "First")
        ingest(config, good_change(person=PersonRef(person_id="p-first", salesforce_id=before)))
        wait_for(lambda: flag(sandbox, before), 120, "the first pusher's push", tails)
        # Killed once the outcome is stored: a kill between Salesforce's answer and the store's
        # write repeats that batch (by design, at most the batch in flight), which would make the
        # count below say nothing about the take-over.
        wait_for(
            lambda: bool(outcomes(state(config, "p-first"), "salesforce_accepted")),
            120,
            "the first pusher to store its outcome",
            tails,
        )
        assert "this is the store's active pusher" not in logs[1].read_text()

        first.kill()  # SIGKILL: no goodbye; the lock dies with it
        first.wait(timeout=60)
        wait_for(said(1, "this is the store's active pusher"), 120, "the take-over", tails)
        after = contact(sandbox, "Second")
        ingest(config, good_change(person=PersonRef(person_id="p-second", salesforce_id=after)))
        wait_for(lambda: flag(sandbox, after), 120, "the second pusher's push", tails)
        assert sandbox.api_calls(PUSH_CALLS) == calls + 2, "nothing pushed twice"
        second.send_signal(signal.SIGTERM)
        assert second.wait(timeout=60) == 0, tails()
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=60)
    assert len(outcomes(state(config, "p-first"), "salesforce_accepted")) == 1


def test_a_field_missing_from_the_org_is_said_at_start_up_and_in_the_history_never_written_elsewhere(
    config: Settings,
) -> None:
    with running_sandbox(marketo_field=None) as org_without_marketo:
        record = contact(org_without_marketo, "Mkto")
        ingest(config, good_change(person=PersonRef(person_id="p-mkto", salesforce_id=record)))
        marketo = {"OPTOUT_OPT_OUT_FIELD": "marketo_sales_opt_out", "OPTOUT_NIGHTLY_SYNC": "on"}
        env = env_of(config, **org_env(org_without_marketo, **marketo))
        for _ in range(2):
            done = subprocess.run(
                [sys.executable, "-m", "consumers", "push"],
                cwd=REPO,
                env=env,
                capture_output=True,
                text=True,
                timeout=180,
            )
            assert done.returncode == 1 and "Marketo Sales Opt Out" in done.stderr, done.stderr
        assert org_without_marketo.api_calls(PUSH_CALLS) == 0
        assert not flag(org_without_marketo, record)  # not the standard checkbox either
        [waiting] = outcomes(state(config, "p-mkto"), "push_waiting")  # said once
        assert (waiting.reason or "").startswith("field_missing")

        _, stats = push(config, org_without_marketo)  # the standard field: the wait is over
        assert stats.accepted == 1 and flag(org_without_marketo, record)


def test_the_pusher_and_the_ingest_writing_the_same_persons_lose_nothing(
    config: Settings, sandbox: Sandbox, tmp_path: Path, ingest_workers: Workers
) -> None:
    records = [contact(sandbox, f"Busy{n}") for n in range(20)]
    pusher = start_pusher(config, sandbox, tmp_path / "pusher.log")
    try:
        ingest_workers.start(config)
        produced = 0
        for round_ in range(5):  # repeat unsubscribes land while their persons are being pushed
            changes = [
                good_change(
                    person=PersonRef(person_id=f"p-busy{n}", salesforce_id=record),
                    occurred_at=good_change().occurred_at.replace(minute=round_),
                )
                for n, record in enumerate(records)
            ]
            produced += produce(config, keyed(changes))

        def stored() -> int:
            store = reader(config)
            try:
                return sum(1 for _ in store.all_changes())
            finally:
                store.close()

        log = tmp_path / "pusher.log"
        wait_for(lambda: stored() == produced, 240, "every change stored", log.read_text)
        wait_for(lambda: all(flag(sandbox, r) for r in records), 240, "every push", log.read_text)
        assert pusher.poll() is None, log.read_text()
    finally:
        pusher.send_signal(signal.SIGTERM)
        pusher.wait(timeout=60)
    for n in range(20):
        found = state(config, f"p-busy{n}")
        assert len(outcomes(found, "unsubscribed")) == 5
        assert len(outcomes(found, "salesforce_accepted")) == 1


def test_a_budget_of_n_calls_is_never_exceeded_across_restarts(config: Settings) -> None:
    with running_sandbox() as org:  # an org of its own: every API call counted from zero
        records = {f"p-bud{n}": contact(org, f"Bud{n}") for n in range(5)}
        ingest(
            config,
            *(
                good_change(person=PersonRef(person_id=p, salesforce_id=r))
                for p, r in records.items()
            ),
        )

        def started(budget: int) -> Pusher:
            env = org_env(org, OPTOUT_SALESFORCE_DAILY_BUDGET=str(budget))
            pusher = bootstrap.pusher(load({**env_of(config), **env}))
            pusher.batch = 1  # one person a call
            return pusher

        first = started(5)  # two describes find the field, three pushes spend the rest
        try:
            first.run(idle_exit_s=IDLE_S)
        finally:
            first.store.close()
        assert org.api_calls() == 5
        with pytest.raises(BudgetSpent):  # restarted: the count is carried, nothing is called
            started(5)
        assert org.api_calls() == 5

        second = started(8)  # the budget raised by three: two describes and one push
        try:
            second.run(idle_exit_s=IDLE_S)
        finally:
            second.store.close()
        assert org.api_calls() == 8
        assert sum(flag(org, record) for record in records.values()) == 4

        done = subprocess.run(  # the verb, restarted once more: says why, calls nothing
            [sys.executable, "-m", "consumers", "push", "--idle-exit", "1"],
            cwd=REPO,
            env=env_of(config, **org_env(org, OPTOUT_SALESFORCE_DAILY_BUDGET="8")),
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert done.returncode == 1 and "OPTOUT_SALESFORCE_DAILY_BUDGET" in done.stderr
        assert org.api_calls() == 8
