"""Filling a sandbox org: from a seed/snapshot JSON file, or generated people with emails.

Seed format: {"contacts": [{field: value, ...}], "leads": [...]}; `Id` optional (generated when
absent), datetimes as RFC 3339, unknown fields ignored.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sandbox.store import RecordStore


def load_file(store: RecordStore, path: Path) -> dict[str, int]:
    """Insert every record of a seed or snapshot file; returns how many of each type."""
    data: dict[str, list[dict[str, Any]]] = json.loads(path.read_text())
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected an object with 'contacts' and 'leads' lists")
    # Contacts first, so a converted lead may name a contact of the same file.
    for key, sobject in (("contacts", "Contact"), ("leads", "Lead")):
        for values in data.get(key, []):
            store.insert(sobject, values)
    return store.count()


def generate(store: RecordStore, count: int) -> dict[str, int]:
    """`count` contacts and `count` leads; every 10th lead shares its contact's email, every
    25th lead is converted into that contact (the cases the sync must handle)."""
    contact_ids: list[str] = []
    for i in range(count):
        record = store.insert(
            "Contact",
            {
                "FirstName": "Contact",
                "LastName": f"Person {i:06d}",
                "Email": f"contact{i:06d}@example.com",
            },
        )
        contact_ids.append(record["Id"])
    for i in range(count):
        values: dict[str, Any] = {
            "FirstName": "Lead",
            "LastName": f"Person {i:06d}",
            "Email": f"lead{i:06d}@example.org",
            "Company": f"Company {i % 97}",
        }
        if i % 10 == 0:
            values["Email"] = f"contact{i:06d}@example.com"
        if i % 25 == 0:
            values.update(IsConverted=True, ConvertedContactId=contact_ids[i])
        store.insert("Lead", values)
    return store.count()
