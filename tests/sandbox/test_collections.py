"""sObject Collections update (PATCH composite/sobjects) through sf.restful."""

from __future__ import annotations

from typing import Any

import pytest
from simple_salesforce import Salesforce, SalesforceMalformedRequest

from sandbox import Sandbox
from tests.sandbox.records import contact_ids, lead_ids

pytestmark = pytest.mark.sandbox


def _records(ids: list[str], sobject: str = "Contact") -> list[dict[str, Any]]:
    return [{"attributes": {"type": sobject}, "id": i, "HasOptedOutOfEmail": True} for i in ids]


def test_partial_success_reports_each_record_in_request_order(
    sandbox: Sandbox, sf: Salesforce
) -> None:
    good = contact_ids(sandbox, 100, 2)
    (converted,) = lead_ids(sandbox, converted=True, count=1)
    records = [
        *_records([good[0][:15]]),
        *_records([converted], "Lead"),
        *_records(["003000000000001"]),
        *_records([good[1]]),
    ]
    results = sf.restful(
        "composite/sobjects", method="PATCH", json={"allOrNone": False, "records": records}
    )
    assert results[0] == {"id": good[0], "success": True, "errors": []}
    assert results[1]["success"] is False
    assert results[1]["errors"] == [
        {
            "statusCode": "CANNOT_UPDATE_CONVERTED_LEAD",
            "message": "cannot reference converted lead",
            "fields": [],
        }
    ]
    assert (
        results[2]["success"] is False
        and results[2]["errors"][0]["statusCode"] == "INVALID_CROSS_REFERENCE_KEY"
    )
    assert results[3] == {"id": good[1], "success": True, "errors": []}
    assert all(sandbox.record(i)["HasOptedOutOfEmail"] for i in good)  # type: ignore[index]


def test_all_or_none_rolls_back_everything(sandbox: Sandbox, sf: Salesforce) -> None:
    good = contact_ids(sandbox, 110, 2)
    (converted,) = lead_ids(sandbox, converted=True, count=1)
    records = [*_records(good), *_records([converted], "Lead")]
    results = sf.restful(
        "composite/sobjects", method="PATCH", json={"allOrNone": True, "records": records}
    )
    assert [r["success"] for r in results] == [False, False, False]
    assert results[0]["errors"][0]["statusCode"] == "ALL_OR_NONE_OPERATION_ROLLED_BACK"
    assert results[2]["errors"][0]["statusCode"] == "CANNOT_UPDATE_CONVERTED_LEAD"
    assert not any(sandbox.record(i)["HasOptedOutOfEmail"] for i in good)  # type: ignore[index]


def test_200_records_is_the_limit(sandbox: Sandbox, sf: Salesforce) -> None:
    ids = contact_ids(sandbox, 200, 201)
    results = sf.restful(
        "composite/sobjects",
        method="PATCH",
        json={"allOrNone": False, "records": _records(ids[:200])},
    )
    assert len(results) == 200 and all(r["success"] for r in results)
    with pytest.raises(SalesforceMalformedRequest) as raised:
        sf.restful(
            "composite/sobjects",
            method="PATCH",
            json={"allOrNone": False, "records": _records(ids)},
        )
    assert raised.value.content[0]["errorCode"] == "EXCEEDED_ID_LIMIT"


def test_unknown_field_fails_the_whole_call(sandbox: Sandbox, sf: Salesforce) -> None:
    records = [
        {"attributes": {"type": "Contact"}, "id": contact_ids(sandbox, 120, 1)[0], "Nope__c": True}
    ]
    with pytest.raises(SalesforceMalformedRequest) as raised:
        sf.restful("composite/sobjects", method="PATCH", json={"records": records})
    assert raised.value.content[0]["errorCode"] == "INVALID_FIELD"
