"""The API-call economy: Sforce-Limit-Info after every call, /limits, and the daily budget."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from adapters.salesforce import BudgetSpent, RequestRefused
from domain.identity import RecordType
from sandbox import Sandbox
from tests.salesforce.conftest import connect_to, flag, new_records, writes

pytestmark = [pytest.mark.sandbox, pytest.mark.timeout(120)]


def test_the_usage_header_is_read_after_every_call_even_a_refused_one(sandbox: Sandbox) -> None:
    org = connect_to(sandbox)
    sandbox.set_api_usage(used=1000, limit=5000)
    assert org.limits().used == 1001  # /limits counts itself
    assert (org.api_usage.used, org.api_usage.max) == (1001, 5000)  # type: ignore[union-attr]
    contacts = new_records(sandbox, "Contact", 250)
    org.push_opt_outs(writes(contacts, RecordType.CONTACT))
    assert org.api_usage is not None and org.api_usage.used == 1003
    with pytest.raises(RequestRefused):
        org.opt_out_flags(contacts[:1], opt_out_field="No_Such_Field__c")
    assert org.api_usage.used == 1004  # from the 400's own header
    assert datetime.now(UTC) - org.api_usage.seen_at < timedelta(seconds=30)
    assert org.api_usage.used == sandbox.org.usage.used


def test_a_budget_of_n_calls_is_never_exceeded(sandbox: Sandbox) -> None:
    org = connect_to(sandbox, OPTOUT_SALESFORCE_DAILY_BUDGET="2")
    contacts = new_records(sandbox, "Contact", 450)
    sandbox.clear_calls()
    started = datetime.now(UTC)
    with pytest.raises(BudgetSpent) as spent:
        org.push_opt_outs(writes(contacts, RecordType.CONTACT))
    assert sandbox.api_calls() == 2 == org.calls_made  # the third call was never sent
    assert (spent.value.spent, spent.value.budget) == (2, 2)
    assert timedelta(hours=24) <= spent.value.resets_at - started < timedelta(hours=24, minutes=1)
    assert [r.record_id for r in spent.value.completed] == contacts[:400]
    assert [w.record_id for w in spent.value.pending] == contacts[400:]
    assert all(flag(sandbox, i) for i in contacts[:400])
    assert not any(flag(sandbox, i) for i in contacts[400:])
    with pytest.raises(BudgetSpent):
        org.limits()
    assert sandbox.api_calls() == 2


def test_a_budget_share_is_of_the_orgs_daily_maximum(sandbox: Sandbox) -> None:
    sandbox.set_api_usage(used=0, limit=400)
    org = connect_to(sandbox, OPTOUT_SALESFORCE_DAILY_BUDGET="1%")  # 4 calls of 400
    sandbox.clear_calls()
    for _ in range(4):
        org.limits()
    with pytest.raises(BudgetSpent) as spent:
        org.limits()
    assert spent.value.budget == 4
    assert sandbox.api_calls() == 4
