"""Each injected fault makes simple-salesforce raise what it raises against a real org."""

from __future__ import annotations

import time

import pytest
import requests
from simple_salesforce import (
    Salesforce,
    SalesforceExpiredSession,
    SalesforceGeneralError,
    SalesforceMalformedRequest,
    SalesforceRefusedRequest,
)

from sandbox import Sandbox, running_sandbox
from tests.sandbox.records import contact_ids

pytestmark = [pytest.mark.sandbox, pytest.mark.timeout(30)]


def test_expired_session_direct_client_raises(sandbox: Sandbox) -> None:
    sf = sandbox.direct_client()
    sf.limits()
    sandbox.expire_sessions(sf.session_id)
    with pytest.raises(SalesforceExpiredSession) as raised:
        sf.query("SELECT Id FROM Contact LIMIT 1")
    assert raised.value.content == [
        {"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}
    ]


def test_expired_session_password_client_logs_in_again(sandbox: Sandbox, sf: Salesforce) -> None:
    old = sf.session_id
    sandbox.expire_sessions(old)
    assert sf.query("SELECT Id FROM Contact LIMIT 1")["totalSize"] == 1
    assert sf.session_id != old


def test_persistent_invalid_session_ends_after_three_relogins_on_salesforce_methods(
    sandbox: Sandbox, sf: Salesforce
) -> None:
    sandbox.add_fault("invalid_session_id", count=10)
    sandbox.clear_calls()
    with pytest.raises(SalesforceExpiredSession):
        sf.query("SELECT Id FROM Contact LIMIT 1")
    assert sandbox.api_calls("/query") == 4  # first try + 3 retries (api.py max_retries=3)


def test_sftype_methods_retry_401_without_a_bound(sandbox: Sandbox, sf: Salesforce) -> None:
    """SFType._call_salesforce drops its retry counter on recursion: it re-logs in until the 401s stop."""
    (record_id,) = contact_ids(sandbox, 400, 1)
    sandbox.add_fault("invalid_session_id", count=6, path="/sobjects/Contact/")
    sandbox.clear_calls()
    assert sf.Contact.update(record_id, {"HasOptedOutOfEmail": True}) == 204
    assert sandbox.api_calls("/sobjects/Contact/") == 7
    assert len(sandbox.org.call_log.calls("login")) == 6


def test_request_limit_exceeded_fault(sandbox: Sandbox, sf: Salesforce) -> None:
    sandbox.add_fault("request_limit_exceeded", count=1)
    with pytest.raises(SalesforceRefusedRequest) as raised:
        sf.limits()
    assert raised.value.content[0]["errorCode"] == "REQUEST_LIMIT_EXCEEDED"
    assert sf.limits()["DailyApiRequests"]["Max"] > 0  # the fault was for one call only


def test_unable_to_lock_row_single_patch_is_400(sandbox: Sandbox, sf: Salesforce) -> None:
    (record_id,) = contact_ids(sandbox, 410, 1)
    sandbox.add_fault("unable_to_lock_row", record_ids=[record_id[:15]], count=1)
    with pytest.raises(SalesforceMalformedRequest) as raised:
        sf.Contact.update(record_id, {"HasOptedOutOfEmail": True})
    assert raised.value.content[0]["errorCode"] == "UNABLE_TO_LOCK_ROW"
    assert sf.Contact.update(record_id, {"HasOptedOutOfEmail": True}) == 204


def test_unable_to_lock_row_is_per_record_in_collections_and_bulk(
    sandbox: Sandbox, sf: Salesforce
) -> None:
    locked, free = contact_ids(sandbox, 420, 2)
    sandbox.add_fault("unable_to_lock_row", record_ids=[locked])
    records = [
        {"attributes": {"type": "Contact"}, "id": i, "HasOptedOutOfEmail": True}
        for i in (locked, free)
    ]
    results = sf.restful(
        "composite/sobjects", method="PATCH", json={"allOrNone": False, "records": records}
    )
    assert results[0]["errors"][0]["statusCode"] == "UNABLE_TO_LOCK_ROW"
    assert results[1]["success"] is True
    (job,) = sf.bulk2.Contact.update(records=[{"Id": locked, "FirstName": "X"}], wait=0.05)
    assert job["numberRecordsFailed"] == 1
    assert "UNABLE_TO_LOCK_ROW" in sf.bulk2.Contact.get_failed_records(job["job_id"])


def test_server_unavailable_is_a_general_error(sandbox: Sandbox, sf: Salesforce) -> None:
    sandbox.add_fault("server_unavailable", probability=1.0, count=1)
    with pytest.raises(SalesforceGeneralError) as raised:
        sf.query("SELECT Id FROM Contact LIMIT 1")
    assert raised.value.status == 503
    assert raised.value.content[0]["errorCode"] == "SERVER_UNAVAILABLE"


def test_dropped_connection_is_a_requests_connection_error(
    sandbox: Sandbox, sf: Salesforce
) -> None:
    sandbox.add_fault("drop_connection", count=1)
    with pytest.raises(requests.exceptions.ConnectionError):
        sf.limits()
    assert sf.limits()["DailyApiRequests"]["Max"] > 0  # a new connection works


def test_latency_is_visible_in_the_call_log(sandbox: Sandbox, sf: Salesforce) -> None:
    sandbox.add_fault("latency", latency_ms=150, count=1)
    sandbox.clear_calls()
    sf.limits()
    (call,) = sandbox.call_log
    assert call.duration_ms >= 150 and call.status == 200


def test_probability_zero_never_fires(sandbox: Sandbox, sf: Salesforce) -> None:
    sandbox.add_fault("server_unavailable", probability=0.0)
    sandbox.clear_calls()
    for _ in range(20):
        assert sf.limits()["DailyApiRequests"]["Max"] > 0  # raises on a 503
    assert [call.status for call in sandbox.call_log] == [200] * 20
    [fault] = sandbox.org.faults.describe()  # still armed, never fired
    assert (fault["kind"], fault["fired"]) == ("server_unavailable", 0)


def test_a_timed_fault_fires_for_its_seconds_then_ends(sandbox: Sandbox, sf: Salesforce) -> None:
    sandbox.add_fault("server_unavailable", seconds=1.0)
    with pytest.raises(SalesforceGeneralError):
        sf.limits()
    deadline = time.monotonic() + 30
    while sandbox.org.faults.describe() and time.monotonic() < deadline:
        try:
            sf.limits()
        except SalesforceGeneralError:
            time.sleep(0.1)  # the fault's own clock decides; nothing to wait on but time
    assert sf.limits()["DailyApiRequests"]["Max"] > 0
    assert not sandbox.org.faults.describe()


def test_every_checkbox_write_is_journalled() -> None:
    with running_sandbox() as org:  # its own: the shared org's record count stays as seeded
        record = org.insert("Contact", LastName="Journal")
        sf = org.client()
        sf.Contact.update(record, {"HasOptedOutOfEmail": True})
        sf.Contact.update(record, {"HasOptedOutOfEmail": False})
        assert org.store.checkbox_writes == [
            (record, "HasOptedOutOfEmail", True),
            (record, "HasOptedOutOfEmail", False),
        ]


def test_a_stopped_sandbox_refuses_connections_and_serves_the_same_org_once_started() -> None:
    with running_sandbox() as org:
        record = org.insert("Contact", LastName="Outage")
        sf = org.client()
        org.stop()
        with pytest.raises(requests.exceptions.ConnectionError):
            sf.limits()
        org.start()
        sf.Contact.update(record, {"HasOptedOutOfEmail": True})  # the same session still works
        assert (org.record(record) or {})["HasOptedOutOfEmail"] is True
