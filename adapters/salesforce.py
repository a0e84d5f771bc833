"""Salesforce, in the product's words: push opt-outs, find records by email, find the opt-out field.

The face of the adapter; simple-salesforce and its quirks stay in `salesforce_client` (login,
timeouts, metering, bounded re-login) and the collections push in `salesforce_push`. Nothing of
simple-salesforce crosses this module's face. See docs/salesforce.md.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote_plus

import msgspec
from simple_salesforce.format import format_soql, quote_soql_value

from adapters.salesforce_client import (
    API_VERSION,
    ApiLimitReached,
    ApiUsage,
    BudgetSpent,
    LoginRefused,
    OrgClient,
    RequestRefused,
    RetryLater,
    SalesforceFailure,
    SalesforceUnavailable,
    SessionRejected,
    UnexpectedResponse,
    connect_client,
)
from adapters.salesforce_push import (
    COLLECTION_LIMIT,
    OptOutTarget,
    OptOutWrite,
    PushOutcome,
    PushResult,
    push_opt_outs,
)
from adapters.settings import Settings
from domain.identity import RecordType, normalise_email, to_18
from domain.opt_out_field import OptOutField

__all__ = [
    "API_VERSION",
    "COLLECTION_LIMIT",
    "ApiLimitReached",
    "ApiUsage",
    "BudgetSpent",
    "FieldMissing",
    "LoginRefused",
    "OptOutTarget",
    "OptOutWrite",
    "OrgCheck",
    "PersonRecord",
    "PushOutcome",
    "PushResult",
    "RequestRefused",
    "RetryLater",
    "SalesforceFailure",
    "SalesforceOrg",
    "SalesforceUnavailable",
    "SessionRejected",
    "UnexpectedResponse",
    "connect",
]

STANDARD_OPT_OUT = "HasOptedOutOfEmail"
MARKETO_LABEL = "Marketo Sales Opt Out"
PERSON_OBJECTS = (RecordType.CONTACT, RecordType.LEAD)
EMAIL_LENGTH = 80  # Salesforce's Email field holds 80 characters: a longer one matches nothing
# A GET's URI plus headers may not pass 16,384 bytes (414/431; help article 000386264), far below
# SOQL's 100,000 characters; the query string is kept under this, leaving room for the rest.
MAX_QUERY_STRING = 12_000
_CONTACT_SOQL = "SELECT Id, Email FROM Contact WHERE Email IN {emails}"
_LEAD_SOQL = "SELECT Id, Email, IsConverted, ConvertedContactId FROM Lead WHERE Email IN {emails}"
_FIELD_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


class FieldMissing(SalesforceFailure):
    """The chosen opt-out field is not usable on an object: never a silent skip or another field."""

    def __init__(self, sobject: str, field: str, reason: str) -> None:
        super().__init__(f"{sobject}.{field}: {reason}", code="FIELD_MISSING")
        self.object = sobject
        self.field = field
        self.reason = reason


class PersonRecord(msgspec.Struct, frozen=True, kw_only=True):
    """A Contact or Lead found by email."""

    id: str  # 18 characters
    type: RecordType
    is_converted: bool = False
    converted_contact_id: str | None = None


class OrgCheck(msgspec.Struct, frozen=True, kw_only=True):
    """What the sync requires of the org, as found."""

    instance: str
    opt_out_field: str
    field_present: dict[str, bool]  # per object: does the opt-out checkbox exist and is updateable
    api_used: int
    api_max: int


def _field_name(name: str) -> str:
    """A field API name, checked before it goes into SOQL unquoted."""
    if not _FIELD_NAME.match(name):
        raise ValueError(f"not a Salesforce field API name: {name!r}")
    return name


def email_batches(
    emails: Sequence[str], max_query_string: int = MAX_QUERY_STRING
) -> list[list[str]]:
    """Splits emails so each `q=` query string (as requests encodes it) stays under the limit."""
    # quote_plus of a concatenation is the concatenation of quote_plus: sizes add up exactly.
    fixed = len("q=") + len(quote_plus(format_soql(_LEAD_SOQL, emails=[])))
    batches: list[list[str]] = []
    batch: list[str] = []
    size = fixed
    for email in emails:
        cost = len(quote_plus(quote_soql_value(email))) + (len(quote_plus(",")) if batch else 0)
        if batch and size + cost > max_query_string:
            batches.append(batch)
            batch, size = [], fixed
            cost = len(quote_plus(quote_soql_value(email)))
        batch.append(email)
        size += cost
    if batch:
        batches.append(batch)
    return batches


class SalesforceOrg:
    """One org, spoken to in the product's vocabulary. Not shared between threads."""

    def __init__(self, client: OrgClient) -> None:
        self._client = client

    # --- the economy -------------------------------------------------------------------------
    @property
    def api_usage(self) -> ApiUsage | None:
        """The org's daily API usage from the latest `Sforce-Limit-Info` (None before any call)."""
        return self._client.meter.usage

    @property
    def calls_made(self) -> int:
        """API calls this process sent (each attempt, whatever its answer); logins excluded."""
        return self._client.meter.calls_made

    def call_times(self) -> list[float]:
        """When each API call counted against the daily budget (the last 24 hours) was sent."""
        return self._client.meter.spent_times()

    @property
    def logins(self) -> int:
        return self._client.meter.logins

    @property
    def instance(self) -> str:
        return self._client.instance

    def limits(self) -> ApiUsage:
        """`/limits` DailyApiRequests (one API call)."""
        daily = self._client.rest("limits", "GET", "limits")["DailyApiRequests"]
        usage = ApiUsage(
            used=int(daily["Max"]) - int(daily["Remaining"]),
            max=int(daily["Max"]),
            seen_at=datetime.now(UTC),
        )
        self._client.meter.usage = usage
        return usage

    # --- writing -----------------------------------------------------------------------------
    def push_opt_outs(self, records: Sequence[OptOutWrite]) -> list[PushResult]:
        """Sets each record's opt-out checkbox to true; one PushResult per write, in order.

        Raises RetryLater, ApiLimitReached, BudgetSpent or RequestRefused when a whole call fails;
        the exception's `completed` holds the results already final, `pending` the writes left.
        """
        return push_opt_outs(self._client, records)

    # --- reading -----------------------------------------------------------------------------
    def records_by_email(self, emails: Iterable[str]) -> dict[str, list[PersonRecord]]:
        """Every Contact and Lead carrying each email (compared without case, as Salesforce does).

        Each given email is a key, with an empty list when no record carries it. Two queries
        (Contact, Lead) per batch of emails; the emails never appear in an error message.
        """
        given = list(dict.fromkeys(emails))
        by_normal: dict[str, list[str]] = {}
        for email in given:
            normal = normalise_email(email)
            if normal and len(normal) <= EMAIL_LENGTH:
                by_normal.setdefault(normal, []).append(email)
        found: dict[str, list[PersonRecord]] = {email: [] for email in given}
        for batch in email_batches(list(by_normal)):
            for template in (_CONTACT_SOQL, _LEAD_SOQL):
                soql = format_soql(template, emails=batch)
                for row in self._query_all("records by email", soql, private=True):
                    record = _person_record(row)
                    for email in by_normal.get(normalise_email(str(row.get("Email") or "")), []):
                        found[email].append(record)
        return found

    def _query_all(self, what: str, soql: str, *, private: bool) -> list[dict[str, Any]]:
        page = self._client.query_page(what, soql, private=private)
        rows = list(page.get("records", []))
        while not page.get("done", True) and page.get("nextRecordsUrl"):
            page = self._client.query_more(what, page["nextRecordsUrl"], private=private)
            rows.extend(page.get("records", []))
        return rows

    def _describe(self, sobject: str) -> list[dict[str, Any]]:
        described = self._client.rest(f"describe {sobject}", "GET", f"sobjects/{sobject}/describe")
        return list(described["fields"])

    def find_opt_out_field(
        self, choice: OptOutField, marketo_field_name: str | None = None
    ) -> OptOutTarget:
        """The chosen field's API name on Contact and on Lead, checked to be a writable checkbox.

        `marketo_sales_opt_out` is the boolean field labelled "Marketo Sales Opt Out" unless
        `marketo_field_name` (OPTOUT_MARKETO_FIELD_NAME) names it. Raises FieldMissing otherwise.
        """
        names: dict[str, str] = {}
        for sobject in PERSON_OBJECTS:
            fields = self._describe(sobject)
            if choice is OptOutField.EMAIL_OPT_OUT:
                names[sobject] = _named(sobject, fields, STANDARD_OPT_OUT, "")
            elif marketo_field_name:
                names[sobject] = _named(
                    sobject, fields, marketo_field_name, " (OPTOUT_MARKETO_FIELD_NAME)"
                )
            else:
                names[sobject] = _labelled(sobject, fields, MARKETO_LABEL)
        return OptOutTarget(choice=choice, contact=names["Contact"], lead=names["Lead"])

    def check_org(self, opt_out_field: str = STANDARD_OPT_OUT) -> OrgCheck:
        """Checks the opt-out field on Contact and Lead, and reads the daily API usage."""
        present = {
            str(sobject): any(
                f["name"] == opt_out_field and f["type"] == "boolean" and f["updateable"]
                for f in self._describe(sobject)
            )
            for sobject in PERSON_OBJECTS
        }
        usage = self.limits()
        return OrgCheck(
            instance=self.instance,
            opt_out_field=opt_out_field,
            field_present=present,
            api_used=usage.used,
            api_max=usage.max,
        )

    def opt_out_flags(
        self, record_ids: Sequence[str], opt_out_field: str = STANDARD_OPT_OUT
    ) -> dict[str, bool]:
        """The opt-out checkbox of each given Contact or Lead id (18 characters)."""
        flags: dict[str, bool] = {}
        for sobject, prefix in (("Contact", "003"), ("Lead", "00Q")):
            ids = [record_id for record_id in record_ids if record_id.startswith(prefix)]
            for start in range(0, len(ids), COLLECTION_LIMIT):
                soql = format_soql(
                    "SELECT Id, {field:literal} FROM {sobject:literal} WHERE Id IN {ids}",
                    field=_field_name(opt_out_field),
                    sobject=sobject,
                    ids=ids[start : start + COLLECTION_LIMIT],
                )
                for record in self._query_all("opt-out flags", soql, private=False):
                    flags[record["Id"]] = bool(record[opt_out_field])
        return flags


def _person_record(row: dict[str, Any]) -> PersonRecord:
    sobject = RecordType(row["attributes"]["type"])
    contact = row.get("ConvertedContactId")
    return PersonRecord(
        id=to_18(row["Id"]),
        type=sobject,
        is_converted=bool(row.get("IsConverted", False)),
        converted_contact_id=to_18(contact) if contact else None,
    )


def _writable(sobject: str, field: dict[str, Any], setting: str) -> str:
    name = str(field["name"])
    if field.get("type") != "boolean":
        raise FieldMissing(
            sobject, name, f"is a {field.get('type')} field, not a checkbox{setting}"
        )
    if not field.get("updateable"):
        raise FieldMissing(
            sobject, name, "is not writable by the integration user (field-level security)"
        )
    return name


def _named(sobject: str, fields: list[dict[str, Any]], name: str, setting: str) -> str:
    for field in fields:
        if str(field["name"]).lower() == name.lower():
            return _writable(sobject, field, setting)
    raise FieldMissing(sobject, name, f"no such field in this org{setting}")


def _labelled(sobject: str, fields: list[dict[str, Any]], label: str) -> str:
    matches = [f for f in fields if str(f.get("label", "")).strip().lower() == label.lower()]
    checkboxes = [f for f in matches if f.get("type") == "boolean"]
    if len(checkboxes) > 1:
        names = ", ".join(str(f["name"]) for f in checkboxes)
        raise FieldMissing(
            sobject,
            label,
            f"{len(checkboxes)} checkboxes carry this label ({names}): "
            "name one in OPTOUT_MARKETO_FIELD_NAME",
        )
    if not matches:
        raise FieldMissing(
            sobject,
            f"<{label}>",
            f'no checkbox labelled "{label}" in this org (is Marketo Sales Insight installed? '
            "otherwise set OPTOUT_MARKETO_FIELD_NAME, or OPTOUT_OPT_OUT_FIELD=email_opt_out)",
        )
    return _writable(sobject, (checkboxes or matches)[0], "")


def connect(settings: Settings, already_spent: Sequence[float] = ()) -> SalesforceOrg:
    """The configured org, logged in (SOAP user login or OAuth client credentials).
    `already_spent`: the calls of the last 24 hours a restarted process carries (`call_times`)."""
    return SalesforceOrg(connect_client(settings, already_spent))
