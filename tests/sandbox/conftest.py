"""One sandbox org per test session (admin on), plus a bare one (admin off, no Marketo field)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from sandbox import Sandbox, running_sandbox

# More contacts than one 2,000-record query page, so query_all has to follow nextRecordsUrl.
CONTACTS = 2100


@pytest.fixture(scope="session")
def sandbox() -> Iterator[Sandbox]:
    with running_sandbox(generate=CONTACTS, admin_enabled=True) as running:
        yield running


@pytest.fixture(scope="session")
def bare_sandbox() -> Iterator[Sandbox]:
    with running_sandbox(generate=3, marketo_field=None, admin_enabled=False) as running:
        yield running


@pytest.fixture
def sf(sandbox: Sandbox):  # type: ignore[no-untyped-def]
    return sandbox.client()
