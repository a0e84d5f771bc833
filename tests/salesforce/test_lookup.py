"""records_by_email: escaped SOQL, batched IN under the URI limit, every page read."""

from __future__ import annotations

import pytest

from adapters.salesforce import PersonRecord, SalesforceOrg, SalesforceUnavailable, email_batches
from domain.identity import RecordType
from sandbox import Sandbox, running_sandbox
from tests.salesforce.conftest import connect_to

pytestmark = [pytest.mark.sandbox, pytest.mark.timeout(120)]

# Addresses whose characters mean something in SOQL or in LIKE; each is a real record.
TRICKY = [
    "o'neil@tricky.example",
    "back\\slash@tricky.example",
    'quote"d@tricky.example',
    "100%@tricky.example",
    "a_b@tricky.example",
]
# Look-ups that would widen or break an unescaped query.
ATTACKS = [
    "x' OR Email != '",
    "x\\' OR Email != \\'",
    "') OR (Email != null) OR Email IN ('",
    "%@tricky.example",
    "10%@tricky.example",
    "a%b@tricky.example",
    "_@tricky.example",
    "a\\_b@tricky.example",
    "' OR Id != null --",
    "\\",
    "'",
]


def test_an_email_cannot_change_the_query(sandbox: Sandbox, org: SalesforceOrg) -> None:
    ids = {email: sandbox.insert("Contact", LastName="Tricky", Email=email) for email in TRICKY}
    decoys = [
        sandbox.insert("Contact", LastName="Decoy", Email=email)
        for email in ("1000@tricky.example", "axb@tricky.example", "a__b@tricky.example")
    ]
    lead = sandbox.insert("Lead", LastName="Tricky", Email="o'neil@tricky.example")
    found = org.records_by_email([*TRICKY, *ATTACKS])
    assert set(found) == {*TRICKY, *ATTACKS}
    for email in TRICKY:
        expected = [PersonRecord(id=ids[email], type=RecordType.CONTACT)]
        if email.startswith("o'neil"):
            expected.append(PersonRecord(id=lead, type=RecordType.LEAD))
        assert found[email] == expected, email
    assert all(found[attack] == [] for attack in ATTACKS)
    every_id = {r.id for records in found.values() for r in records}
    assert every_id.isdisjoint(decoys)


def test_one_email_several_records_and_converted_leads(
    sandbox: Sandbox, org: SalesforceOrg
) -> None:
    contact = sandbox.insert("Contact", LastName="Shared", Email="Shared@Lookup.example")
    lead = sandbox.insert("Lead", LastName="Shared", Email="shared@lookup.example")
    converted = sandbox.insert("Lead", LastName="Shared", Email="SHARED@lookup.example")
    sandbox.convert_lead(converted, contact)
    sandbox.clear_calls()
    found = org.records_by_email(["shared@LOOKUP.example", "nobody@lookup.example"])
    assert sorted(found["shared@LOOKUP.example"], key=lambda r: r.id) == sorted(
        [
            PersonRecord(id=contact, type=RecordType.CONTACT),
            PersonRecord(id=lead, type=RecordType.LEAD),
            PersonRecord(
                id=converted, type=RecordType.LEAD, is_converted=True, converted_contact_id=contact
            ),
        ],
        key=lambda r: r.id,
    )
    assert found["nobody@lookup.example"] == []
    assert sandbox.api_calls("/query") == 2  # one query per object


def test_many_emails_are_split_into_queries_that_fit_the_uri_limit(
    sandbox: Sandbox, org: SalesforceOrg
) -> None:
    emails = [f"someone.with.a.longer.address.{n:05d}@batches.example" for n in range(1500)]
    ids = {email: sandbox.insert("Contact", LastName="Batch", Email=email) for email in emails[::2]}
    batches = email_batches(emails)
    assert len(batches) >= 3
    sandbox.clear_calls()
    found = org.records_by_email(emails)
    assert sandbox.api_calls("/query") == 2 * len(batches)
    assert not sandbox.org.call_log.calls("edge")  # no 414 or 431
    assert {e: [r.id for r in found[e]] for e in emails if found[e]} == {
        e: [i] for e, i in ids.items()
    }


def test_more_than_a_page_of_records_for_one_email_are_all_read(
    sandbox: Sandbox, org: SalesforceOrg
) -> None:
    email = "everyone@pages.example"
    leads = [sandbox.insert("Lead", LastName=f"P{n}", Email=email) for n in range(2100)]
    sandbox.clear_calls()
    found = org.records_by_email([email])
    assert sorted(r.id for r in found[email]) == sorted(leads)
    assert sandbox.api_calls("/query") == 3  # Contact, Lead, and the Lead's second page


def test_an_unreachable_org_fails_the_lookup_without_showing_the_emails() -> None:
    """urllib3 quotes the URL of a refused connection; the query string holds the emails."""
    with running_sandbox() as stopping:
        org = connect_to(stopping)
    with pytest.raises(SalesforceUnavailable) as failed:
        org.records_by_email(["private.person@lookup.example"])
    assert "Max retries exceeded" in str(failed.value)
    assert "private.person" not in str(failed.value)
