"""push_opt_outs through sObject Collections on the sandbox: batching, per-record results, converted leads."""

from __future__ import annotations

import pytest

from adapters.salesforce import (
    OptOutTarget,
    PushOutcome,
    SalesforceOrg,
    SalesforceUnavailable,
)
from domain.identity import RecordType, to_18
from domain.opt_out_field import OptOutField
from sandbox import Sandbox
from tests.salesforce.conftest import flag, new_records, writes

pytestmark = [pytest.mark.sandbox, pytest.mark.timeout(120)]


def test_450_records_are_three_calls_and_every_result_is_read(
    sandbox: Sandbox, org: SalesforceOrg
) -> None:
    contacts = new_records(sandbox, "Contact", 300)
    leads = new_records(sandbox, "Lead", 150)
    batch = writes(contacts, RecordType.CONTACT) + writes(leads, RecordType.LEAD)
    sandbox.clear_calls()
    before = org.calls_made
    results = org.push_opt_outs(batch)
    assert sandbox.api_calls("/composite/sobjects") == 3 == len(sandbox.call_log)
    assert org.calls_made - before == 3
    assert [r.record_id for r in results] == [w.record_id for w in batch]
    assert all(r.outcome is PushOutcome.ACCEPTED and r.accepted for r in results)
    assert [r.written_id for r in results] == contacts + leads
    assert {r.field for r in results} == {"HasOptedOutOfEmail"}
    assert all(r.answered_at is not None for r in results)
    assert all(flag(sandbox, i) for i in contacts + leads)


def test_a_200_response_with_failed_records_is_classified_per_record(
    sandbox: Sandbox, org: SalesforceOrg
) -> None:
    contacts = new_records(sandbox, "Contact", 6)
    locked = contacts[1:3]
    sandbox.add_fault("unable_to_lock_row", record_ids=locked)
    unknown = to_18("003000000000001")  # well formed, no such record
    batch = writes([*contacts, unknown], RecordType.CONTACT)
    sandbox.clear_calls()
    results = org.push_opt_outs(batch)
    assert sandbox.api_calls("/composite/sobjects") == 1
    assert [r.outcome for r in results] == [
        PushOutcome.ACCEPTED,
        PushOutcome.RETRY,
        PushOutcome.RETRY,
        PushOutcome.ACCEPTED,
        PushOutcome.ACCEPTED,
        PushOutcome.ACCEPTED,
        PushOutcome.REFUSED,
    ]
    assert {r.error_code for r in results[1:3]} == {"UNABLE_TO_LOCK_ROW"}
    assert not any(r.accepted for r in results[1:3])
    assert results[-1].error_code == "INVALID_CROSS_REFERENCE_KEY" and not results[-1].accepted
    assert results[-1].message  # Salesforce's message is kept
    # The state the failures left: locked rows untouched, the others written.
    assert [flag(sandbox, i) for i in contacts] == [True, False, False, True, True, True]
    sandbox.clear_faults()
    again = org.push_opt_outs(writes(locked, RecordType.CONTACT))
    assert all(r.outcome is PushOutcome.ACCEPTED for r in again)
    assert all(flag(sandbox, i) for i in locked)


def test_a_converted_lead_is_written_through_its_converted_contact(
    sandbox: Sandbox, org: SalesforceOrg
) -> None:
    contact, other = new_records(sandbox, "Contact", 2)
    lead, open_lead = new_records(sandbox, "Lead", 2)
    sandbox.convert_lead(lead, contact)
    sandbox.clear_calls()
    results = org.push_opt_outs(
        writes([lead, open_lead], RecordType.LEAD) + writes([other], RecordType.CONTACT)
    )
    converted, written, plain = results
    assert converted.outcome is PushOutcome.CONVERTED_LEAD and converted.accepted
    assert converted.record_id == lead and converted.object_type is RecordType.LEAD
    assert converted.converted_contact_id == contact == converted.written_id
    assert converted.field == "HasOptedOutOfEmail"
    assert written.outcome is plain.outcome is PushOutcome.ACCEPTED
    assert flag(sandbox, contact) and flag(sandbox, open_lead) and flag(sandbox, other)
    assert not flag(sandbox, lead)  # a converted lead is never written
    # The batch, the lookup of ConvertedContactId, the contact's write.
    assert [c.path for c in sandbox.call_log] == [
        "/services/data/v59.0/composite/sobjects",
        "/services/data/v59.0/query/",
        "/services/data/v59.0/composite/sobjects",
    ]


def test_a_converted_leads_contact_that_is_locked_is_a_retry_naming_both(
    sandbox: Sandbox, org: SalesforceOrg
) -> None:
    (contact,) = new_records(sandbox, "Contact", 1)
    (lead,) = new_records(sandbox, "Lead", 1)
    sandbox.convert_lead(lead, contact)
    sandbox.add_fault("unable_to_lock_row", record_ids=[contact], count=1)
    (result,) = org.push_opt_outs(writes([lead], RecordType.LEAD))
    assert result.outcome is PushOutcome.RETRY and not result.accepted
    assert result.error_code == "UNABLE_TO_LOCK_ROW"
    assert (result.record_id, result.converted_contact_id) == (lead, contact)
    (again,) = org.push_opt_outs(writes([lead], RecordType.LEAD))
    assert again.outcome is PushOutcome.CONVERTED_LEAD and flag(sandbox, contact)


def test_a_failed_lookup_for_converted_leads_keeps_what_was_done(
    sandbox: Sandbox, org: SalesforceOrg
) -> None:
    contact, other = new_records(sandbox, "Contact", 2)
    (lead,) = new_records(sandbox, "Lead", 1)
    sandbox.convert_lead(lead, contact)
    batch = writes([other], RecordType.CONTACT) + writes([lead], RecordType.LEAD)
    sandbox.add_fault("server_unavailable", path="/query", count=1)
    with pytest.raises(SalesforceUnavailable) as unavailable:
        org.push_opt_outs(batch)
    assert unavailable.value.retryable and unavailable.value.status == 503
    assert [r.record_id for r in unavailable.value.completed] == [other]
    assert unavailable.value.completed[0].accepted and flag(sandbox, other)
    assert list(unavailable.value.pending) == batch[1:]
    assert not flag(sandbox, contact)


def test_a_record_twice_in_a_batch_is_written_once_and_answered_twice(
    sandbox: Sandbox, org: SalesforceOrg
) -> None:
    (contact,) = new_records(sandbox, "Contact", 1)
    sandbox.clear_calls()
    results = org.push_opt_outs(writes([contact, contact[:15]], RecordType.CONTACT))
    assert [r.record_id for r in results] == [contact, contact[:15]]
    assert all(r.accepted and r.written_id == contact for r in results)
    assert sandbox.api_calls("/composite/sobjects") == 1


def test_the_field_written_is_the_targets_and_only_ever_true(
    sandbox: Sandbox, org: SalesforceOrg
) -> None:
    (contact,) = new_records(sandbox, "Contact", 1)
    target = org.find_opt_out_field(OptOutField.MARKETO_SALES_OPT_OUT)
    marketo = sandbox.config.marketo_field
    assert marketo is not None
    (result,) = org.push_opt_outs(writes([contact], RecordType.CONTACT, target))
    assert result.accepted and result.field == marketo
    assert flag(sandbox, contact, marketo) and not flag(sandbox, contact)


def test_a_field_missing_from_the_org_refuses_every_record_of_the_call(
    sandbox: Sandbox, org: SalesforceOrg
) -> None:
    """A field deleted after start-up: Salesforce refuses the call (INVALID_FIELD), nothing else is written."""
    contacts = new_records(sandbox, "Contact", 2)
    gone = OptOutTarget(choice=OptOutField.MARKETO_SALES_OPT_OUT, contact="Gone__c", lead="Gone__c")
    results = org.push_opt_outs(writes(contacts, RecordType.CONTACT, gone))
    assert [(r.outcome, r.error_code) for r in results] == [
        (PushOutcome.REFUSED, "INVALID_FIELD")
    ] * 2
    assert results[0].message == "No such column 'Gone__c' on sobject of type Contact"
    assert not any(flag(sandbox, i) for i in contacts)
