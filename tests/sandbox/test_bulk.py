"""Bulk API 2.0 through sf.bulk2: update jobs with per-row results, query jobs with locators."""

from __future__ import annotations

import csv
import io
import json
import time

import pytest
from simple_salesforce import Salesforce
from simple_salesforce.exceptions import SalesforceOperationError

from sandbox import Sandbox
from tests.sandbox.conftest import CONTACTS
from tests.sandbox.records import contact_ids, lead_ids

pytestmark = [pytest.mark.sandbox, pytest.mark.timeout(60)]
# simple-salesforce sleeps `wait` seconds before its first poll (default 5); keep tests brisk.
WAIT = 0.05


def test_update_job_reports_successes_and_failures(sandbox: Sandbox, sf: Salesforce) -> None:
    good = contact_ids(sandbox, 300, 3)
    rows = [{"Id": i, "HasOptedOutOfEmail": "true"} for i in good] + [
        {"Id": "003000000000001AAA", "HasOptedOutOfEmail": "true"}
    ]
    (result,) = sf.bulk2.Contact.update(records=rows, wait=WAIT)
    assert result["numberRecordsProcessed"] == 4 and result["numberRecordsFailed"] == 1
    outcome = sf.bulk2.Contact.get_all_ingest_records(result["job_id"])
    assert [r["sf__Id"] for r in outcome["successfulRecords"]] == good
    assert all(
        r["sf__Created"] == "false" and r["HasOptedOutOfEmail"] == "true"
        for r in outcome["successfulRecords"]
    )
    (failed,) = outcome["failedRecords"]
    assert failed["sf__Error"].startswith("INVALID_CROSS_REFERENCE_KEY:")
    assert outcome["unprocessedRecords"] == []
    assert all(sandbox.record(i)["HasOptedOutOfEmail"] for i in good)  # type: ignore[index]


def test_update_job_refuses_converted_leads_per_row(sandbox: Sandbox, sf: Salesforce) -> None:
    (converted,) = lead_ids(sandbox, converted=True, count=1)
    (open_lead,) = lead_ids(sandbox, converted=False, count=1)
    rows = [
        {"Id": converted, "HasOptedOutOfEmail": "true"},
        {"Id": open_lead[:15], "HasOptedOutOfEmail": "true"},
    ]
    (result,) = sf.bulk2.Lead.update(records=rows, wait=WAIT)
    assert result["numberRecordsFailed"] == 1
    failed = sf.bulk2.Lead.get_failed_records(result["job_id"])
    assert "CANNOT_UPDATE_CONVERTED_LEAD:cannot reference converted lead" in failed
    # simple-salesforce builds the CSV header from a set: column order varies run to run.
    header = failed.splitlines()[0].split(",")
    assert header[:2] == ["sf__Id", "sf__Error"] and set(header[2:]) == {"Id", "HasOptedOutOfEmail"}


def test_unknown_column_fails_the_job(sandbox: Sandbox, sf: Salesforce) -> None:
    (record_id,) = contact_ids(sandbox, 310, 1)
    with pytest.raises(
        SalesforceOperationError, match="InvalidBatch : Field name not found : Nope__c"
    ):
        sf.bulk2.Contact.update(records=[{"Id": record_id, "Nope__c": "1"}], wait=WAIT)


def test_job_life_cycle_over_raw_requests(sandbox: Sandbox, sf: Salesforce) -> None:
    session, jobs = sf.session, f"{sf.base_url}jobs/ingest"
    headers = {"Authorization": f"Bearer {sf.session_id}", "Content-Type": "application/json"}
    created = session.post(
        jobs,
        headers=headers,
        data=json.dumps(
            {"object": "Contact", "operation": "update", "contentType": "CSV", "lineEnding": "LF"}
        ),
    )
    job = created.json()
    assert created.status_code == 200 and job["state"] == "Open" and job["id"].startswith("750")
    upload = session.put(
        f"{jobs}/{job['id']}/batches",
        headers={**headers, "Content-Type": "text/csv"},
        data=b"Id,FirstName\n",
    )
    assert upload.status_code == 201
    aborted = session.patch(
        f"{jobs}/{job['id']}", headers=headers, data=json.dumps({"state": "Aborted"})
    )
    assert aborted.json()["state"] == "Aborted"
    again = session.patch(
        f"{jobs}/{job['id']}", headers=headers, data=json.dumps({"state": "UploadComplete"})
    )
    assert again.status_code == 409
    deleted = session.delete(f"{jobs}/{job['id']}", headers=headers)
    assert deleted.status_code == 204 and deleted.content == b""
    assert session.get(f"{jobs}/{job['id']}", headers=headers).status_code == 404


def test_delete_job_in_simple_salesforce_expects_json_but_salesforce_sends_204(
    sf: Salesforce,
) -> None:
    """Surprise worth knowing: _Bulk2Client.delete_job() calls .json() on Salesforce's empty 204."""
    client = sf.bulk2.Contact._client
    job = client.create_job("update")
    client.abort_job(job["id"], False)
    with pytest.raises(json.JSONDecodeError):
        client.delete_job(job["id"], False)


def test_query_job_pages_with_locator(sf: Salesforce) -> None:
    pages = list(
        sf.bulk2.Contact.query(
            "SELECT Id, Email, HasOptedOutOfEmail FROM Contact", max_records=1000, wait=WAIT
        )
    )
    assert len(pages) == 3
    rows = [row for page in pages for row in csv.DictReader(io.StringIO(page))]
    assert len(rows) == CONTACTS
    assert set(rows[0]) == {"Id", "Email", "HasOptedOutOfEmail"}
    assert rows[0]["HasOptedOutOfEmail"] in ("true", "false")


def test_query_job_headers(sandbox: Sandbox, sf: Salesforce) -> None:
    client = sf.bulk2.Lead._client
    job = client.create_job("query", query="SELECT Id FROM Lead WHERE IsConverted = true")
    client.wait_for_job(job["id"], True, WAIT)
    page = client.get_query_results(job["id"], max_records=10)
    assert page["number_of_records"] == 10 and page["locator"]
    rest = client.get_query_results(job["id"], locator=page["locator"], max_records=100_000)
    assert rest["locator"] == ""  # Sforce-Locator: null on the last page
    converted = sum(1 for lead in sandbox.store.records["Lead"].values() if lead["IsConverted"])
    assert page["number_of_records"] + rest["number_of_records"] == converted


def test_malformed_bulk_query_is_refused_at_creation(sf: Salesforce) -> None:
    from simple_salesforce import SalesforceMalformedRequest

    with pytest.raises(SalesforceMalformedRequest) as raised:
        list(sf.bulk2.Contact.query("SELECT Id FROM", wait=WAIT))
    assert raised.value.content[0]["errorCode"] == "MALFORMED_QUERY"


def test_a_bulk_job_failed_fault_ends_the_job_failed_with_every_row_unprocessed(
    sandbox: Sandbox, sf: Salesforce
) -> None:
    ids = contact_ids(sandbox, 320, 2)
    sandbox.add_fault("bulk_job_failed", object="Contact", count=1)
    client = sf.bulk2.Contact._client
    job = client.create_job("update")
    client.upload_job_data(job["id"], f"Id,HasOptedOutOfEmail\n{ids[0]},true\n{ids[1]},true\n")
    client.close_job(job["id"])
    deadline = time.monotonic() + 10
    while (state := client.get_job(job["id"], False))["state"] not in ("Failed", "JobComplete"):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert state["state"] == "Failed" and "bulk_job_failed" in state["errorMessage"]
    unprocessed = sf.bulk2.Contact.get_unprocessed_records(job["id"])
    assert [row.split(",")[0] for row in unprocessed.splitlines()[1:]] == ids
    assert not any(sandbox.record(i)["HasOptedOutOfEmail"] for i in ids)  # type: ignore[index]
    # The fault is spent: the next job completes.
    (result,) = sf.bulk2.Contact.update(
        records=[{"Id": ids[0], "HasOptedOutOfEmail": "true"}], wait=WAIT
    )
    assert result["numberRecordsFailed"] == 0
