"""Picking records for a test: each test takes its own slice so tests never share records."""

from __future__ import annotations

from sandbox import Sandbox


def contact_ids(sandbox: Sandbox, start: int, count: int) -> list[str]:
    """Distinct contacts per test, so tests do not step on each other's records."""
    return list(sandbox.store.records["Contact"])[start : start + count]


def lead_ids(sandbox: Sandbox, converted: bool, count: int) -> list[str]:
    leads = sandbox.store.records["Lead"].values()
    return [lead["Id"] for lead in leads if bool(lead["IsConverted"]) == converted][:count]
