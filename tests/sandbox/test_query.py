"""SOQL through sf.query / query_all: paging, operators, literals, and Salesforce's error shapes."""

from __future__ import annotations

import pytest
from simple_salesforce import Salesforce, SalesforceMalformedRequest

from sandbox import Sandbox
from tests.sandbox.conftest import CONTACTS
from tests.sandbox.records import contact_ids

pytestmark = pytest.mark.sandbox


def test_query_pages_by_2000_with_next_records_url(sf: Salesforce) -> None:
    first = sf.query("SELECT Id, Email FROM Contact")
    assert first["totalSize"] == CONTACTS and first["done"] is False
    assert len(first["records"]) == 2000
    assert first["nextRecordsUrl"].startswith("/services/data/v59.0/query/01g")
    record = first["records"][0]
    assert list(record) == ["attributes", "Id", "Email"]
    assert record["attributes"]["type"] == "Contact"
    second = sf.query_more(first["nextRecordsUrl"], identifier_is_url=True)
    assert second["done"] is True and "nextRecordsUrl" not in second
    assert len(second["records"]) == CONTACTS - 2000


def test_query_all_follows_every_page(sandbox: Sandbox, sf: Salesforce) -> None:
    sandbox.clear_calls()
    everything = sf.query_all("SELECT Id FROM Contact")
    assert everything["totalSize"] == CONTACTS
    assert len({r["Id"] for r in everything["records"]}) == CONTACTS
    assert sandbox.api_calls("/query") == 2


def test_where_with_in_and_or_not_and_parentheses(sandbox: Sandbox, sf: Salesforce) -> None:
    ids = contact_ids(sandbox, 10, 3)
    quoted = ", ".join(f"'{i[:15]}'" for i in ids)
    result = sf.query(
        f"SELECT Id FROM Contact WHERE Id IN ({quoted}) AND (NOT Email = null) ORDER BY Email DESC"
    )
    assert [r["Id"] for r in result["records"]] == list(reversed(ids))
    either = sf.query(
        "SELECT Id FROM Lead WHERE (Email = 'lead000003@example.org' OR Email = 'LEAD000004@EXAMPLE.ORG') "
        "AND IsConverted = false"
    )
    assert either["totalSize"] == 2  # text equality ignores case, as in Salesforce


def test_comparisons_nulls_booleans_and_limit(sf: Salesforce) -> None:
    rows = sf.query(
        "SELECT Email FROM Contact WHERE Email >= 'contact000100' AND Email < 'contact000103' ORDER BY Email"
    )
    assert [r["Email"] for r in rows["records"]] == [
        f"contact00010{i}@example.com" for i in range(3)
    ]
    converted = sf.query(
        "SELECT Id, ConvertedContactId FROM Lead WHERE IsConverted = true AND ConvertedContactId != null LIMIT 5"
    )
    assert converted["totalSize"] == 5
    none = sf.query("SELECT Id FROM Lead WHERE ConvertedContactId = null AND IsConverted = TRUE")
    assert none["totalSize"] == 0


def test_string_escapes(sandbox: Sandbox, sf: Salesforce) -> None:
    record_id = sandbox.insert(
        "Lead", LastName="O'Brien \\ line\nbreak", Email="obrien@example.com"
    )
    found = sf.query("SELECT Id, LastName FROM Lead WHERE LastName = 'O\\'Brien \\\\ line\\nbreak'")
    assert [r["Id"] for r in found["records"]] == [record_id]


def test_datetime_literal_on_system_modstamp(sandbox: Sandbox, sf: Salesforce) -> None:
    (record_id,) = contact_ids(sandbox, 20, 1)
    sf.Contact.update(record_id, {"FirstName": "Touched"})
    stamp = sf.Contact.get(record_id)["SystemModstamp"]  # 2026-01-01T00:00:00.000+0000
    literal = stamp[:19] + "Z"
    later = sf.query(
        f"SELECT Id FROM Contact WHERE SystemModstamp >= {literal} AND FirstName = 'Touched'"
    )
    assert record_id in [r["Id"] for r in later["records"]]
    assert (
        sf.query("SELECT COUNT() FROM Contact WHERE SystemModstamp > 2999-01-01T00:00:00Z")[
            "totalSize"
        ]
        == 0
    )


def test_count_query(sf: Salesforce) -> None:
    result = sf.query("SELECT COUNT() FROM Contact WHERE Email LIKE 'contact00000%'")
    assert result == {"totalSize": 10, "done": True, "records": []}


@pytest.mark.parametrize(
    "soql",
    [
        "SELECT Id FRM Contact",
        "SELECT Id FROM Contact WHERE Email = 'unterminated",
        "SELECT Id FROM Contact WHERE Email = 'a' AND Email = 'b' OR Email = 'c'",
        "SELECT Id FROM Contact LIMIT",
        "SELECT FROM Contact",
    ],
)
def test_malformed_query(sf: Salesforce, soql: str) -> None:
    with pytest.raises(SalesforceMalformedRequest) as raised:
        sf.query(soql)
    assert raised.value.status == 400
    (error,) = raised.value.content
    assert error["errorCode"] == "MALFORMED_QUERY"
    assert "ERROR at Row:1:Column:" in error["message"]


@pytest.mark.parametrize(
    "soql",
    [
        "SELECT Id, NoSuchField FROM Contact",
        "SELECT Id FROM Contact WHERE HasOptedOutOfEmail = 'true'",
        "SELECT Id FROM Contact WHERE SystemModstamp > '2026-01-01'",
    ],
)
def test_invalid_field(sf: Salesforce, soql: str) -> None:
    with pytest.raises(SalesforceMalformedRequest) as raised:
        sf.query(soql)
    assert raised.value.content[0]["errorCode"] == "INVALID_FIELD"


def test_unknown_object_is_invalid_type(sf: Salesforce) -> None:
    with pytest.raises(SalesforceMalformedRequest) as raised:
        sf.query("SELECT Id FROM Opportunity")
    assert raised.value.content[0]["errorCode"] == "INVALID_TYPE"
