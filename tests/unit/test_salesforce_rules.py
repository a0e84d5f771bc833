"""The adapter's pure parts: the usage header, the budget, classification, the body, the batches."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from urllib.parse import urlencode

import pytest
from hypothesis import given
from hypothesis import strategies as st
from simple_salesforce import SalesforceMalformedRequest
from simple_salesforce.format import format_soql

from adapters.salesforce import _LEAD_SOQL, OptOutTarget, OptOutWrite, email_batches
from adapters.salesforce_client import (
    BudgetSpent,
    CallMeter,
    RequestRefused,
    _translated,
    parse_limit_info,
)
from adapters.salesforce_push import PushOutcome, classify, collection_body
from adapters.settings import DailyBudget
from domain.identity import RecordType
from domain.opt_out_field import OptOutField

NOW = datetime(2026, 3, 1, tzinfo=UTC)


def test_the_usage_header_is_parsed_and_per_app_usage_is_not_mistaken_for_it() -> None:
    assert parse_limit_info("api-usage=18/5000", NOW) is not None
    usage = parse_limit_info("api-usage=25/5000; per-app-api-usage=17/250(appName=x)", NOW)
    assert usage is not None and (usage.used, usage.max, usage.seen_at) == (25, 5000, NOW)
    assert parse_limit_info("per-app-api-usage=17/250(appName=x)", NOW) is None
    assert parse_limit_info(None, NOW) is None
    assert parse_limit_info("api-usage=lots", NOW) is None


class Clock:
    def __init__(self) -> None:
        self.now = NOW.timestamp()

    def __call__(self) -> float:
        return self.now


def test_a_budget_of_n_calls_refuses_the_next_until_the_oldest_is_24_hours_old() -> None:
    clock = Clock()
    meter = CallMeter(DailyBudget(calls=3), clock)
    for minute in range(3):
        clock.now = NOW.timestamp() + 60 * minute
        meter.before_api_call()
    with pytest.raises(BudgetSpent) as spent:
        meter.before_api_call()
    assert spent.value.resets_at == NOW + timedelta(hours=24)
    assert meter.calls_made == 3
    clock.now = (NOW + timedelta(hours=24)).timestamp()
    meter.before_api_call()  # the first call left the window
    with pytest.raises(BudgetSpent) as again:
        meter.before_api_call()
    assert again.value.resets_at == NOW + timedelta(hours=24, minutes=1)


def test_a_share_waits_for_the_orgs_maximum_then_holds_to_it() -> None:
    clock = Clock()
    meter = CallMeter(DailyBudget(share=0.01), clock)
    meter.before_api_call()  # the maximum is not known yet: this call teaches it
    meter.observe("api-usage=7/300")
    meter.before_api_call()
    meter.before_api_call()
    with pytest.raises(BudgetSpent) as spent:
        meter.before_api_call()
    assert spent.value.budget == 3


def test_calls_spent_before_a_restart_still_count() -> None:
    clock = Clock()
    earlier = [clock.now - 3600, clock.now - 60]
    meter = CallMeter(DailyBudget(calls=2), clock, already_spent=earlier)
    with pytest.raises(BudgetSpent):
        meter.before_api_call()
    assert meter.spent_times() == earlier


@pytest.mark.parametrize(
    ("code", "outcome"),
    [
        (None, PushOutcome.ACCEPTED),
        ("UNABLE_TO_LOCK_ROW", PushOutcome.RETRY),
        ("CANNOT_UPDATE_CONVERTED_LEAD", PushOutcome.CONVERTED_LEAD),
        ("REQUEST_LIMIT_EXCEEDED", PushOutcome.LIMIT),
        ("INVALID_FIELD", PushOutcome.REFUSED),
        ("NOT_FOUND", PushOutcome.REFUSED),
        ("ENTITY_IS_DELETED", PushOutcome.REFUSED),
        ("FIELD_INTEGRITY_EXCEPTION", PushOutcome.REFUSED),
        ("INVALID_CROSS_REFERENCE_KEY", PushOutcome.REFUSED),
        ("SOMETHING_NEW", PushOutcome.REFUSED),
    ],
)
def test_each_record_error_code_has_an_outcome(code: str | None, outcome: PushOutcome) -> None:
    assert classify(code) is outcome


def test_the_body_only_ever_sets_true_on_the_targets_field() -> None:
    target = OptOutTarget(choice=OptOutField.MARKETO_SALES_OPT_OUT, contact="C__c", lead="L__c")
    body = collection_body(
        [
            OptOutWrite(
                record_id="0035g00000AbCdEAAV", object_type=RecordType.CONTACT, target=target
            ),
            OptOutWrite(record_id="00Q5g00000AbCdEAAV", object_type=RecordType.LEAD, target=target),
        ]
    )
    assert body == {
        "allOrNone": False,
        "records": [
            {"attributes": {"type": "Contact"}, "id": "0035g00000AbCdEAAV", "C__c": True},
            {"attributes": {"type": "Lead"}, "id": "00Q5g00000AbCdEAAV", "L__c": True},
        ],
    }


@given(
    st.lists(st.text(min_size=1, max_size=80), min_size=1, max_size=60, unique=True),
    st.integers(min_value=400, max_value=3000),
)
def test_every_batch_fits_the_query_string_limit_and_nothing_is_lost(
    emails: list[str], limit: int
) -> None:
    batches = email_batches(emails, limit)
    assert [e for batch in batches for e in batch] == emails
    for batch in batches:
        size = len(urlencode({"q": format_soql(_LEAD_SOQL, emails=batch)}))
        assert size <= limit or len(batch) == 1
    # Greedy: a batch closes only when the next email would not fit.
    for batch, following in itertools.pairwise(batches):
        bigger = len(urlencode({"q": format_soql(_LEAD_SOQL, emails=[*batch, following[0]])}))
        assert bigger > limit


def test_a_private_calls_error_keeps_salesforces_code_but_not_its_message() -> None:
    """MALFORMED_QUERY and INVALID_FIELD messages quote the query, and with it the emails."""
    content = [{"errorCode": "MALFORMED_QUERY", "message": "Email IN ('ada@example.com')"}]
    error = SalesforceMalformedRequest("https://x/query/?q=...", 400, "query", content)
    with pytest.raises(RequestRefused) as private, _translated("records by email", private=True):
        raise error
    assert private.value.code == "MALFORMED_QUERY" and private.value.status == 400
    assert "ada@" not in str(private.value) and "ada@" not in private.value.detail
    with pytest.raises(RequestRefused) as shown, _translated("opt-out flags"):
        raise error
    assert "ada@example.com" in shown.value.detail
