"""Logging in, the bounded re-login, and what each failure of a whole call becomes."""

from __future__ import annotations

import pytest

from adapters.salesforce import (
    ApiLimitReached,
    LoginRefused,
    RetryLater,
    SalesforceUnavailable,
    SessionRejected,
)
from domain.identity import RecordType
from sandbox import Sandbox
from tests.salesforce.conftest import connect_to, flag, new_records, writes

pytestmark = [pytest.mark.sandbox, pytest.mark.timeout(120)]


def _logins(sandbox: Sandbox) -> int:
    return len(sandbox.org.call_log.calls("login"))


def test_oauth_client_credentials_log_in_and_log_in_again(sandbox: Sandbox) -> None:
    org = connect_to(
        sandbox,
        SALESFORCE_USERNAME="",
        SALESFORCE_PASSWORD="",
        SALESFORCE_SECURITY_TOKEN="",
        SALESFORCE_CONSUMER_KEY=sandbox.config.consumer_key,
        SALESFORCE_CONSUMER_SECRET=sandbox.config.consumer_secret,
    )
    assert org.logins == 1
    sandbox.clear_calls()
    sandbox.expire_sessions()
    assert org.limits().max == sandbox.config.daily_api_limit
    assert _logins(sandbox) == 1 and org.logins == 2
    assert [c.path for c in sandbox.org.call_log.calls("login")] == [
        "/sandbox.salesforce.com/services/oauth2/token"
    ]


def test_refused_credentials_stop_start_up_without_showing_the_password(sandbox: Sandbox) -> None:
    with pytest.raises(LoginRefused, match="INVALID_LOGIN") as refused:
        connect_to(sandbox, SALESFORCE_PASSWORD="wrong-Pa55word")
    assert "wrong-Pa55word" not in str(refused.value)
    assert not refused.value.retryable
    with pytest.raises(LoginRefused, match="invalid_client"):
        connect_to(
            sandbox,
            SALESFORCE_USERNAME="",
            SALESFORCE_PASSWORD="",
            SALESFORCE_CONSUMER_KEY=sandbox.config.consumer_key,
            SALESFORCE_CONSUMER_SECRET="not-the-secret",
        )


def test_a_session_expired_mid_run_costs_exactly_one_login(sandbox: Sandbox) -> None:
    org = connect_to(sandbox)
    first = new_records(sandbox, "Contact", 200)
    org.push_opt_outs(writes(first, RecordType.CONTACT))
    rest = new_records(sandbox, "Contact", 450)
    sandbox.expire_sessions()  # between two pushes, as Salesforce's session timeout does
    sandbox.clear_calls()
    results = org.push_opt_outs(writes(rest, RecordType.CONTACT))
    assert all(r.accepted for r in results)
    assert _logins(sandbox) == 1
    assert [c.status for c in sandbox.call_log] == [401, 200, 200, 200]
    assert all(flag(sandbox, i) for i in rest)


def test_a_session_that_keeps_expiring_is_an_error_after_one_login(sandbox: Sandbox) -> None:
    org = connect_to(sandbox)
    contacts = new_records(sandbox, "Contact", 3)
    sandbox.add_fault("invalid_session_id")  # every call, until cleared
    sandbox.clear_calls()
    with pytest.raises(SessionRejected) as rejected:
        org.push_opt_outs(writes(contacts, RecordType.CONTACT))
    assert isinstance(rejected.value, RetryLater)
    assert rejected.value.code == "INVALID_SESSION_ID"
    assert [c.status for c in sandbox.call_log] == [401, 401]  # not a loop
    assert _logins(sandbox) == 1
    assert rejected.value.completed == () and len(rejected.value.pending) == 3
    sandbox.clear_faults()
    assert all(r.accepted for r in org.push_opt_outs(writes(contacts, RecordType.CONTACT)))
    assert _logins(sandbox) == 1  # the fresh session is still good


def test_request_limit_exceeded_is_api_limit_reached_with_the_usage(sandbox: Sandbox) -> None:
    org = connect_to(sandbox)
    contacts = new_records(sandbox, "Contact", 2)
    sandbox.set_api_usage(used=500, limit=500)  # the org's allowance, spent by others
    with pytest.raises(ApiLimitReached) as spent:
        org.push_opt_outs(writes(contacts, RecordType.CONTACT))
    assert not spent.value.retryable
    assert spent.value.usage is not None and (spent.value.usage.used, spent.value.usage.max) == (
        500,
        500,
    )
    assert len(spent.value.pending) == 2 and not any(flag(sandbox, i) for i in contacts)
    sandbox.add_fault("request_limit_exceeded", count=1)
    sandbox.set_api_usage(used=0)
    with pytest.raises(ApiLimitReached):
        org.limits()


def test_503_a_dropped_connection_and_a_timeout_are_retryable(sandbox: Sandbox) -> None:
    org = connect_to(sandbox, OPTOUT_SALESFORCE_TIMEOUT="2")
    contacts = new_records(sandbox, "Contact", 2)
    batch = writes(contacts, RecordType.CONTACT)
    sandbox.add_fault("server_unavailable", count=1)
    with pytest.raises(SalesforceUnavailable) as unavailable:
        org.push_opt_outs(batch)
    assert unavailable.value.status == 503 and unavailable.value.code == "SERVER_UNAVAILABLE"
    assert list(unavailable.value.pending) == batch
    sandbox.add_fault("drop_connection", count=1)
    with pytest.raises(SalesforceUnavailable, match="ConnectionError"):
        org.push_opt_outs(batch)
    sandbox.add_fault("latency", latency_ms=5000, count=1)
    with pytest.raises(SalesforceUnavailable, match="Timeout"):
        org.push_opt_outs(batch)
    assert all(r.accepted for r in org.push_opt_outs(batch))
    assert all(flag(sandbox, i) for i in contacts)
