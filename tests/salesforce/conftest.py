"""The adapter against the sandbox over HTTPS, configured the way a deployment is: from settings."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest

from adapters.salesforce import OptOutTarget, OptOutWrite, SalesforceOrg, connect
from adapters.settings import load
from domain.identity import RecordType
from domain.opt_out_field import OptOutField
from sandbox import Sandbox, running_sandbox

EMAIL_OPT_OUT = OptOutTarget(
    choice=OptOutField.EMAIL_OPT_OUT, contact="HasOptedOutOfEmail", lead="HasOptedOutOfEmail"
)
_serial = itertools.count()


@pytest.fixture(scope="session")
def sandbox() -> Iterator[Sandbox]:
    with running_sandbox() as running:
        yield running


def org_env(sandbox: Sandbox, **settings: str) -> dict[str, str]:
    """The environment a deployment would set for this org (SOAP user login unless overridden)."""
    env = {
        "SALESFORCE_USERNAME": sandbox.config.username,
        "SALESFORCE_PASSWORD": sandbox.config.password,
        "SALESFORCE_SECURITY_TOKEN": sandbox.config.security_token,
        "SALESFORCE_DOMAIN": sandbox.login_domain,
        "SALESFORCE_CA_BUNDLE": str(sandbox.ca_path),
    }
    env.update(settings)
    return {name: value for name, value in env.items() if value}


def connect_to(sandbox: Sandbox, **settings: str) -> SalesforceOrg:
    return connect(load(org_env(sandbox, **settings)))


@pytest.fixture
def org(sandbox: Sandbox) -> SalesforceOrg:
    return connect_to(sandbox)


def new_records(sandbox: Sandbox, sobject: str, count: int) -> list[str]:
    """Fresh records for one test, so tests never share records."""
    return [
        sandbox.insert(sobject, LastName=f"T{n}", Email=f"t{n}@{sobject.lower()}.example")
        for n in (next(_serial) for _ in range(count))
    ]


def writes(
    ids: list[str], sobject: RecordType, target: OptOutTarget = EMAIL_OPT_OUT
) -> list[OptOutWrite]:
    return [OptOutWrite(record_id=i, object_type=sobject, target=target) for i in ids]


def flag(sandbox: Sandbox, record_id: str, field: str = "HasOptedOutOfEmail") -> bool:
    record = sandbox.record(record_id)
    assert record is not None, record_id
    return bool(record[field])
