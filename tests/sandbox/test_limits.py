"""The daily API allowance: /limits, the Sforce-Limit-Info header, REQUEST_LIMIT_EXCEEDED."""

from __future__ import annotations

import pytest
from simple_salesforce import Salesforce, SalesforceRefusedRequest

from sandbox import Sandbox

pytestmark = pytest.mark.sandbox


def test_limits_shape_and_usage_header(sandbox: Sandbox, sf: Salesforce) -> None:
    sandbox.set_api_usage(0)
    limits = sf.limits()
    assert limits["DailyApiRequests"] == {
        "Max": sandbox.config.daily_api_limit,
        "Remaining": sandbox.config.daily_api_limit - 1,
    }
    sf.query("SELECT Id FROM Contact LIMIT 1")
    assert sf.api_usage["api-usage"].used == 2
    assert sf.api_usage["api-usage"].total == sandbox.config.daily_api_limit


def test_every_api_call_counts_and_the_allowance_runs_out(sandbox: Sandbox, sf: Salesforce) -> None:
    sandbox.set_api_usage(used=0, limit=3)
    for _ in range(3):
        sf.limits()
    with pytest.raises(SalesforceRefusedRequest) as raised:
        sf.limits()
    assert raised.value.status == 403
    assert raised.value.content == [
        {"message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}
    ]
    assert sandbox.org.usage.used == 3
