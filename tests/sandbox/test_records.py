"""Single records: get, partial update, describe, ids, modstamps, converted leads."""

from __future__ import annotations

import pytest
from simple_salesforce import Salesforce, SalesforceMalformedRequest, SalesforceResourceNotFound

from domain.identity import to_18
from sandbox import Sandbox
from tests.sandbox.records import contact_ids, lead_ids

pytestmark = pytest.mark.sandbox


def test_get_accepts_15_and_18_character_ids_and_answers_with_18(
    sandbox: Sandbox, sf: Salesforce
) -> None:
    (record_id,) = contact_ids(sandbox, 0, 1)
    short = sf.Contact.get(record_id[:15])
    assert short["Id"] == record_id == to_18(record_id[:15])
    assert short["attributes"] == {
        "type": "Contact",
        "url": f"/services/data/v59.0/sobjects/Contact/{record_id}",
    }
    assert sf.Contact.get(record_id)["Email"] == short["Email"]


def test_partial_update_returns_204_and_moves_modstamps(sandbox: Sandbox, sf: Salesforce) -> None:
    (record_id,) = contact_ids(sandbox, 1, 1)
    before = sf.Contact.get(record_id)
    assert sf.Contact.update(record_id[:15], {"HasOptedOutOfEmail": True}) == 204
    after = sf.Contact.get(record_id)
    assert after["HasOptedOutOfEmail"] is True
    assert after["Email"] == before["Email"]
    assert after["SystemModstamp"] >= before["SystemModstamp"]
    assert after["LastModifiedDate"] == after["SystemModstamp"]
    assert after["SystemModstamp"].endswith("+0000")


def test_unknown_field_is_invalid_field(sandbox: Sandbox, sf: Salesforce) -> None:
    (record_id,) = contact_ids(sandbox, 2, 1)
    with pytest.raises(SalesforceMalformedRequest) as raised:
        sf.Contact.update(record_id, {"NoSuchField__c": True})
    assert raised.value.status == 400
    assert raised.value.content[0]["errorCode"] == "INVALID_FIELD"


def test_read_only_field_is_refused(sandbox: Sandbox, sf: Salesforce) -> None:
    (record_id,) = contact_ids(sandbox, 2, 1)
    with pytest.raises(SalesforceMalformedRequest) as raised:
        sf.Contact.update(record_id, {"SystemModstamp": "2026-01-01T00:00:00Z"})
    assert raised.value.content[0]["errorCode"] == "INVALID_FIELD_FOR_INSERT_UPDATE"


def test_unknown_id_is_not_found(sf: Salesforce) -> None:
    with pytest.raises(SalesforceResourceNotFound) as raised:
        sf.Contact.update("003000000000001", {"HasOptedOutOfEmail": True})
    assert raised.value.content == [
        {"message": "The requested resource does not exist", "errorCode": "NOT_FOUND"}
    ]
    with pytest.raises(SalesforceResourceNotFound):
        sf.Contact.get("003000000000001AAA")


def test_converted_lead_refuses_updates(sandbox: Sandbox, sf: Salesforce) -> None:
    (lead_id,) = lead_ids(sandbox, converted=True, count=1)
    lead = sf.Lead.get(lead_id)
    assert lead["IsConverted"] is True and lead["ConvertedContactId"].startswith("003")
    with pytest.raises(SalesforceMalformedRequest) as raised:
        sf.Lead.update(lead_id, {"HasOptedOutOfEmail": True})
    assert raised.value.content[0]["errorCode"] == "CANNOT_UPDATE_CONVERTED_LEAD"


def test_describe_reports_the_opt_out_fields(sf: Salesforce) -> None:
    for sobject in ("Contact", "Lead"):
        described = getattr(sf, sobject).describe()
        assert described["name"] == described["label"] == sobject
        fields = {f["name"]: f for f in described["fields"]}
        assert (
            fields["HasOptedOutOfEmail"]["type"] == "boolean"
            and fields["HasOptedOutOfEmail"]["updateable"]
        )
        assert fields["Email"]["type"] == "email"
        assert fields["SystemModstamp"]["updateable"] is False
        assert fields["LastModifiedDate"]["type"] == "datetime"
        marketo = fields["mkto_si__Marketo_Sales_Opt_Out__c"]
        assert (marketo["label"], marketo["type"], marketo["custom"]) == (
            "Marketo Sales Opt Out",
            "boolean",
            True,
        )
    lead_fields = {f["name"] for f in sf.Lead.describe()["fields"]}
    assert {"IsConverted", "ConvertedContactId"} <= lead_fields


def test_marketo_field_can_be_absent(bare_sandbox: Sandbox) -> None:
    sf = bare_sandbox.client()
    names = {f["name"] for f in sf.Contact.describe()["fields"]}
    assert "HasOptedOutOfEmail" in names
    assert not any(n.endswith("Marketo_Sales_Opt_Out__c") for n in names)
    record_id = next(iter(bare_sandbox.store.records["Contact"]))
    with pytest.raises(SalesforceMalformedRequest) as raised:
        sf.Contact.update(record_id, {"mkto_si__Marketo_Sales_Opt_Out__c": True})
    assert raised.value.content[0]["errorCode"] == "INVALID_FIELD"


def test_marketo_field_is_writable_when_present(sandbox: Sandbox, sf: Salesforce) -> None:
    (record_id,) = contact_ids(sandbox, 3, 1)
    sf.Contact.update(record_id, {"mkto_si__Marketo_Sales_Opt_Out__c": True})
    assert sf.Contact.get(record_id)["mkto_si__Marketo_Sales_Opt_Out__c"] is True
