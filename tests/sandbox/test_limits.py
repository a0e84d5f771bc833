"""The daily API allowance: /limits, the Sforce-Limit-Info header, REQUEST_LIMIT_EXCEEDED."""

from __future__ import annotations

from urllib.parse import urlencode

import pytest
from simple_salesforce import Salesforce, SalesforceGeneralError, SalesforceRefusedRequest

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


def _emails_query(count: int) -> str:
    emails = ",".join(f"'person{i:06d}@example.com'" for i in range(count))
    return f"SELECT Id FROM Contact WHERE Email IN ({emails})"


def test_a_uri_over_16384_bytes_is_414_and_with_headers_431_and_neither_counts(
    sandbox: Sandbox, sf: Salesforce
) -> None:
    """Salesforce's URI + headers limit on REST calls (help article 000386264), met before the API."""
    sandbox.set_api_usage(0)
    sandbox.clear_calls()
    with pytest.raises(SalesforceGeneralError) as too_long:
        sf.query(_emails_query(500))  # ~18,000 bytes of query string
    assert too_long.value.status == 414
    # A URI just under the limit, pushed over it by the request's headers (Authorization, ...).
    count = next(n for n in range(500, 0, -1) if _uri_bytes(sf, _emails_query(n)) <= 16_384)
    assert _uri_bytes(sf, _emails_query(count)) > 16_384 - 200
    with pytest.raises(SalesforceGeneralError) as too_large:
        sf.query(_emails_query(count))
    assert too_large.value.status == 431
    assert sandbox.org.usage.used == 0  # refused at the edge: not API calls
    assert [c.status for c in sandbox.org.call_log.calls("edge")] == [414, 431]
    assert sf.query(_emails_query(100))["totalSize"] == 0  # a shorter one is served


def _uri_bytes(sf: Salesforce, soql: str) -> int:
    path = f"/services/data/v{sf.sf_version}/query/"
    return len(path) + 1 + len(urlencode({"q": soql}))
