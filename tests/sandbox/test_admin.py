"""The admin API: refused unless enabled; switches faults, expires sessions, exposes the call log."""

from __future__ import annotations

import pytest
from simple_salesforce import Salesforce, SalesforceGeneralError

from sandbox import Sandbox
from tests.sandbox.records import lead_ids

pytestmark = [pytest.mark.sandbox, pytest.mark.timeout(30)]


def test_admin_is_refused_unless_enabled(bare_sandbox: Sandbox) -> None:
    session = bare_sandbox.session()
    for method, path in (
        ("GET", "state"),
        ("POST", "faults"),
        ("GET", "calls"),
        ("POST", "sessions/expire"),
    ):
        response = session.request(method, f"{bare_sandbox.url}/__admin/{path}", json={})
        assert response.status_code == 403
        assert response.json()[0]["errorCode"] == "ADMIN_DISABLED"


def test_faults_switched_at_run_time(sandbox: Sandbox, sf: Salesforce) -> None:
    session = sandbox.session()
    added = session.post(
        f"{sandbox.url}/__admin/faults", json={"kind": "server_unavailable", "count": 1}
    )
    assert added.status_code == 201 and added.json()[0]["kind"] == "server_unavailable"
    with pytest.raises(SalesforceGeneralError):
        sf.limits()
    assert session.get(f"{sandbox.url}/__admin/faults").json() == []  # spent after one call
    bad = session.post(f"{sandbox.url}/__admin/faults", json={"kind": "meteor"})
    assert bad.status_code == 400


def test_call_log_over_http(sandbox: Sandbox, sf: Salesforce) -> None:
    session = sandbox.session()
    assert session.delete(f"{sandbox.url}/__admin/calls").status_code == 204
    sf.limits()
    sf.query("SELECT Id FROM Contact LIMIT 1")
    log = session.get(f"{sandbox.url}/__admin/calls").json()
    assert log["count"] == 2
    assert [(c["method"], c["status"]) for c in log["calls"]] == [("GET", 200), ("GET", 200)]
    assert log["calls"][0]["path"].endswith("/limits/")


def test_expire_sessions_over_http(sandbox: Sandbox) -> None:
    sf = sandbox.direct_client()
    expired = sandbox.session().post(
        f"{sandbox.url}/__admin/sessions/expire", json={"session_id": sf.session_id}
    )
    assert expired.json() == {"expired": 1}
    assert not sandbox.org.sessions.valid(sf.session_id)


def test_convert_lead_over_http(sandbox: Sandbox) -> None:
    (lead_id,) = lead_ids(sandbox, converted=False, count=1)
    contact_id = next(iter(sandbox.store.records["Contact"]))
    response = sandbox.session().post(
        f"{sandbox.url}/__admin/leads/{lead_id}/convert", json={"contact_id": contact_id}
    )
    assert response.json()["IsConverted"] is True
    assert response.json()["ConvertedContactId"] == contact_id
