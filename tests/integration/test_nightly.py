"""The nightly pass in-process, against the sandbox through the unmodified simple-salesforce client
and the real store: both directions, twice, conflicts, converted leads, failed Bulk jobs, and a
missing opt-out field."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from adapters.salesforce import SalesforceUnavailable
from adapters.settings import Settings
from consumers.nightly import PassRefused, tracking_name
from domain.identity import RecordType, person_key, to_18
from domain.nightly import ACTOR_KIND, CHANNEL
from domain.nightly_pass import passes, recorded_slots
from domain.person import Person
from sandbox import Sandbox, running_sandbox
from tests.integration.nightly_org import (
    age,
    here,
    history,
    of_type,
    org,
    pulled,
    reading,
    record,
    removed,
    run_pass,
    settings_for,
    store_url,
    unsubscribed,
    writes,
)

__all__ = ["org", "store_url"]
pytestmark = [pytest.mark.sandbox, pytest.mark.timeout(180)]


def sqlite(org: Sandbox, tmp_path: Path, **extra: str) -> Settings:
    return settings_for(org, f"sqlite:///{tmp_path / 'events.sqlite'}", tmp_path, **extra)


def flag(org: Sandbox, record_id: str) -> bool:
    found = org.record(record_id)
    assert found is not None, record_id
    return bool(found["HasOptedOutOfEmail"])


def test_the_same_pass_twice_imports_and_pushes_nothing_the_second_time(
    org: Sandbox, store_url: str, tmp_path: Path
) -> None:
    config = settings_for(org, store_url, tmp_path)
    there = [record(org, "Contact", checked=True) for _ in range(3)]
    there += [record(org, "Lead", checked=True) for _ in range(2)]
    owed = [record(org, "Contact"), record(org, "Contact"), record(org, "Lead")]
    both = record(org, "Contact", checked=True)
    here(
        config,
        *(unsubscribed(f"p-{n}", record_id) for n, record_id in enumerate(owed)),
        unsubscribed("p-both", both),
        unsubscribed("p-unlinked", None),
    )

    first = run_pass(config)
    assert (first.read, first.imported, first.pushed, first.accepted, first.failed) == (
        6,
        5,
        3,
        3,
        0,
    )
    assert first.pending_link == 1 and first.conflicts == []
    assert all(flag(org, record_id) for record_id in owed)

    second = run_pass(config)
    assert (second.imported, second.pushed, second.failed, second.conflicts) == (0, 0, 0, [])
    assert second.api_calls <= 3, second  # a pass with nothing to do: two reads

    store = reading(config)
    try:
        changes = pulled(store)
        assert sorted(to_18(str(c.salesforce_id)) for c in changes) == sorted(there)
        assert all(
            (c.actor_kind, c.channel, c.mailbox is not None) == (ACTOR_KIND, CHANNEL, True)
            for c in changes
        )
        assert {store.person(person_key(r)) is not None for r in there} == {True}
        # Seen checked already: proven, not written again.
        [seen] = of_type(history(store, person_key("p-both")), Person.OptOutAccepted)
        assert (seen.record_id, seen.written_id) == (both, both)
        assert [p.outcome for p in passes(store)] == ["done", "done"]
    finally:
        store.close()
    assert org.api_calls("composite/sobjects") == 1  # the three owed, in one call


def test_a_removed_unsubscribe_still_checked_in_salesforce_comes_back_as_a_conflict(
    org: Sandbox, tmp_path: Path
) -> None:
    config = sqlite(org, tmp_path)
    checked = record(org, "Contact", checked=True)
    here(config, unsubscribed("p-c", checked, hours_ago=3), removed("p-c", checked, hours_ago=2))

    first = run_pass(config)
    assert [(c.record_id, c.person_key) for c in first.conflicts] == [(checked, "person:p-c")]
    assert first.imported == 1

    # Removed again; the record has not changed since (so only the check by id can see it).
    age(org, checked)
    here(config, removed("p-c", checked, hours_ago=0))
    second = run_pass(config)
    assert [(c.record_id, c.person_key) for c in second.conflicts] == [(checked, "person:p-c")]

    store = reading(config)
    try:
        person, answer = store.standing("person:p-c")
        assert answer.opted_out and person is not None
        latest = person.own.unsubscribe
        assert latest is not None and latest.source == "salesforce"
        back = [c for c in pulled(store) if c.originator_id == person.id]
        assert len(back) == 2 and len({c.event_id for c in back}) == 2
    finally:
        store.close()
    assert flag(org, checked)
    assert writes(org) == []  # never unchecked: re-subscribes never sync


@pytest.mark.parametrize("bulk_from", ["1", "2000"], ids=["bulk", "collections"])
def test_a_converted_lead_in_the_push_set_is_written_through_its_contact(
    org: Sandbox, tmp_path: Path, bulk_from: str
) -> None:
    config = sqlite(org, tmp_path, OPTOUT_NIGHTLY_BULK_FROM=bulk_from)
    lead, contact = record(org, "Lead"), record(org, "Contact")
    org.convert_lead(lead, contact)
    plain = record(org, "Lead")
    here(config, unsubscribed("p-lead", lead), unsubscribed("p-plain", plain))

    report = run_pass(config)
    assert (report.pushed, report.accepted, report.failed) == (2, 2, 0)
    assert flag(org, contact) and flag(org, plain)
    assert (org.api_calls("jobs/ingest") > 0) is (bulk_from == "1")
    store = reading(config)
    try:
        [accepted] = of_type(history(store, "person:p-lead"), Person.OptOutAccepted)
        assert (accepted.record_id, accepted.written_id, accepted.converted_contact_id) == (
            lead,
            contact,
            contact,
        )
    finally:
        store.close()
    again = run_pass(config)
    assert (again.imported, again.pushed) == (0, 0)  # the contact, now checked, is the lead's


def test_bulk_job_failures_are_each_recorded(org: Sandbox, tmp_path: Path) -> None:
    config = sqlite(org, tmp_path, OPTOUT_NIGHTLY_BULK_FROM="1")
    ghost = to_18("003000000099999")  # no such contact: a failedResults row
    locked, fine = record(org, "Contact"), record(org, "Contact")
    leads = [record(org, "Lead"), record(org, "Lead")]
    org.add_fault("unable_to_lock_row", record_ids=[locked], count=1)  # retried, then accepted
    org.add_fault("bulk_job_failed", object="Lead", count=1)  # the Lead job ends Failed
    here(
        config,
        unsubscribed("p-ghost", ghost),
        unsubscribed("p-locked", locked),
        unsubscribed("p-fine", fine),
        *(unsubscribed(f"p-lead-{n}", lead) for n, lead in enumerate(leads)),
    )

    report = run_pass(config)
    assert (report.pushed, report.accepted, report.failed) == (5, 2, 3)
    assert flag(org, locked) and flag(org, fine) and not any(flag(org, lead) for lead in leads)
    assert org.api_calls("composite/sobjects") == 1  # the locked row, retried by collections
    store = reading(config)
    try:
        [refused] = of_type(history(store, "person:p-ghost"), Person.OptOutRefused)
        assert (refused.code, refused.will_retry) == ("INVALID_CROSS_REFERENCE_KEY", False)
        for n in range(2):
            [failed] = of_type(history(store, f"person:p-lead-{n}"), Person.OptOutRefused)
            assert failed.code == "BULK_JOB_FAILED" and failed.will_retry
            assert "Failed" in failed.message
        [recorded] = passes(store)
        assert (recorded.failed, recorded.accepted) == (3, 2)
    finally:
        store.close()


@pytest.fixture
def org_without_marketo() -> Iterator[Sandbox]:
    with running_sandbox(marketo_field=None) as running:
        yield running


def _nothing_written(config: Settings, org: Sandbox, before: int | None) -> None:
    store = reading(config)
    try:
        assert store.recorder.max_notification_id() == before
        assert store.position(tracking_name(RecordType.CONTACT)) is None
        assert store.position(tracking_name(RecordType.LEAD)) is None
        assert list(passes(store)) == []
    finally:
        store.close()
    assert writes(org) == []


def test_the_opt_out_field_missing_refuses_the_pass_and_writes_nothing(
    org_without_marketo: Sandbox, tmp_path: Path
) -> None:
    org = org_without_marketo
    config = sqlite(org, tmp_path, OPTOUT_OPT_OUT_FIELD="marketo_sales_opt_out")
    record(org, "Contact", checked=True)
    here(config, unsubscribed("p-1", record(org, "Contact")))
    store = reading(config)
    before = store.recorder.max_notification_id()
    store.close()
    with pytest.raises(PassRefused, match=r"Marketo Sales Opt Out.*OPTOUT_OPT_OUT_FIELD"):
        run_pass(config)
    _nothing_written(config, org, before)


def test_a_named_opt_out_field_missing_refuses_the_pass_at_its_first_read(
    org_without_marketo: Sandbox, tmp_path: Path
) -> None:
    org = org_without_marketo
    config = sqlite(
        org,
        tmp_path,
        OPTOUT_OPT_OUT_FIELD="marketo_sales_opt_out",
        OPTOUT_MARKETO_FIELD_NAME="mkto_si__Marketo_Sales_Opt_Out__c",
    )
    record(org, "Lead", checked=True)
    with pytest.raises(PassRefused, match=r"Contact\.mkto_si__Marketo_Sales_Opt_Out__c: no such"):
        run_pass(config)
    _nothing_written(config, org, None)


def test_a_pass_that_fails_is_recorded_as_failed_and_runs_again(
    org: Sandbox, tmp_path: Path
) -> None:
    config = sqlite(org, tmp_path)
    checked = record(org, "Contact", checked=True)
    org.add_fault("server_unavailable", path="jobs/query")  # every Bulk query call: 503
    with pytest.raises(SalesforceUnavailable):
        run_pass(config)
    org.clear_faults()
    store = reading(config)
    try:
        [failed] = passes(store)
        assert failed.outcome == "failed" and "503" in str(failed.error)
        assert "!failed@" in failed.slot and recorded_slots(store) == set()
        assert (failed.imported, failed.api_calls) == (0, 1)
        assert pulled(store) == []
    finally:
        store.close()
    again = run_pass(config)
    assert (again.outcome, again.imported) == ("done", 1)
    store = reading(config)
    try:
        assert [p.outcome for p in passes(store)] == ["failed", "done"]
        assert [str(c.salesforce_id) for c in pulled(store)] == [checked]
    finally:
        store.close()


def test_two_persons_owing_one_record_each_get_its_answer(org: Sandbox, tmp_path: Path) -> None:
    config = sqlite(org, tmp_path)
    shared = record(org, "Contact")
    here(config, unsubscribed("p-one", shared), unsubscribed("p-two", shared))
    report = run_pass(config)
    assert (report.pushed, report.accepted, report.failed) == (2, 2, 0)
    store = reading(config)
    try:
        for key in ("person:p-one", "person:p-two"):
            [accepted] = of_type(history(store, key), Person.OptOutAccepted)
            assert accepted.record_id == shared
    finally:
        store.close()
    assert run_pass(config).pushed == 0
