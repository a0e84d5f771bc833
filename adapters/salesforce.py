"""Salesforce through simple-salesforce: the one place that builds the client and knows its quirks.

Quirks handled here: simple-salesforce sets no timeouts (a session with a default one does);
REQUESTS_CA_BUNDLE in the environment would override a session's CA (trust_env is off when a CA
bundle is configured); SOQL literals are escaped with its own `format_soql`.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec
import requests
from simple_salesforce import Salesforce
from simple_salesforce.format import format_soql

from adapters.settings import ConfigError, Settings

API_VERSION = "59.0"
STANDARD_OPT_OUT = "HasOptedOutOfEmail"
PERSON_OBJECTS = ("Contact", "Lead")


_FIELD_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


def _field_name(name: str) -> str:
    """A field API name, checked before it goes into SOQL unquoted."""
    if not _FIELD_NAME.match(name):
        raise ValueError(f"not a Salesforce field API name: {name!r}")
    return name


class _TimeoutSession(requests.Session):
    """A session whose requests time out (simple-salesforce passes none)."""

    def __init__(self, timeout_s: float) -> None:
        super().__init__()
        self.timeout_s = timeout_s

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("timeout", self.timeout_s)
        return super().request(method, url, *args, **kwargs)


class OrgCheck(msgspec.Struct, frozen=True, kw_only=True):
    """What the sync requires of the org, as found."""

    instance: str
    opt_out_field: str
    field_present: dict[str, bool]  # per object: does the opt-out checkbox exist and is updateable
    api_used: int
    api_max: int


def connect(settings: Settings, timeout_s: float = 30.0) -> Salesforce:
    """A logged-in client for the configured org (SOAP username/password/token login)."""
    if not settings.salesforce_username or not settings.salesforce_password:
        raise ConfigError("SALESFORCE_USERNAME: no Salesforce org is configured")
    session = _TimeoutSession(timeout_s)
    if settings.salesforce_ca_bundle:
        session.verify = settings.salesforce_ca_bundle
        session.trust_env = False
    return Salesforce(
        username=settings.salesforce_username,
        password=str(settings.salesforce_password),
        security_token=str(settings.salesforce_security_token or ""),
        domain=settings.salesforce_domain,
        session=session,
        version=API_VERSION,
    )


def check_org(client: Salesforce, opt_out_field: str = STANDARD_OPT_OUT) -> OrgCheck:
    """Checks the opt-out field on Contact and Lead, and reads the daily API budget."""
    present = {}
    for sobject in PERSON_OBJECTS:
        fields = getattr(client, sobject).describe()["fields"]
        present[sobject] = any(
            f["name"] == opt_out_field and f["type"] == "boolean" and f["updateable"]
            for f in fields
        )
    daily = client.limits()["DailyApiRequests"]
    return OrgCheck(
        instance=client.sf_instance,
        opt_out_field=opt_out_field,
        field_present=present,
        api_used=daily["Max"] - daily["Remaining"],
        api_max=daily["Max"],
    )


def opt_out_flags(
    client: Salesforce, record_ids: list[str], opt_out_field: str = STANDARD_OPT_OUT
) -> dict[str, bool]:
    """The opt-out checkbox of each given Contact or Lead id (18 characters)."""
    flags: dict[str, bool] = {}
    for sobject, prefix in (("Contact", "003"), ("Lead", "00Q")):
        ids = [record_id for record_id in record_ids if record_id.startswith(prefix)]
        if not ids:
            continue
        soql = format_soql(
            "SELECT Id, {field:literal} FROM {sobject:literal} WHERE Id IN {ids}",
            field=_field_name(opt_out_field),
            sobject=sobject,
            ids=ids,
        )
        for record in client.query_all(soql)["records"]:
            flags[record["Id"]] = bool(record[opt_out_field])
    return flags
