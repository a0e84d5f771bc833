"""`optout-sync forget`: no byte of the address stays in the store, the opt-out does, and the
address is recognised when it arrives again — on SQLite and on PostgreSQL."""

from __future__ import annotations

import json
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from adapters.inbound import Actor, PersonRef
from adapters.settings import Settings
from devservices import database as local_postgres
from tests.e2e.cli import optout_sync as run_cli
from tests.factories import good_change
from tests.integration.ingest_harness import env_of, keyed, produce
from tests.integration.test_ingest import run_until_caught_up

pytestmark = [pytest.mark.kafka]
ADDRESS = "Ada.Erasure@Example.com"
NORMALISED = ADDRESS.lower().encode()


def optout_sync(config: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    """The command line on these settings; it must succeed."""
    result = run_cli(*args, env=env_of(config), timeout=120)
    assert result.returncode == 0, result.stderr
    return result


def store_bytes(config: Settings) -> bytes:
    """Everything the store holds on disk (SQLite: the file and its journals) or in a dump."""
    url = urlsplit(config.database_url)
    if url.scheme == "sqlite":
        path = Path(config.database_url[len("sqlite:///") :])
        files = [path, *(path.with_name(path.name + suffix) for suffix in ("-wal", "-shm"))]
        return b"".join(f.read_bytes() for f in files if f.exists())
    binaries = local_postgres.binaries()
    pg_dump = binaries / "pg_dump" if (binaries / "pg_dump").exists() else shutil.which("pg_dump")
    assert pg_dump, "pg_dump is needed to read the store as a dump"
    return subprocess.run(
        [str(pg_dump), "--dbname", config.database_url], capture_output=True, check=True
    ).stdout


def test_forget_erases_every_byte_of_the_address_and_keeps_the_opt_out(config: Settings) -> None:
    at = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
    admin = Actor(kind="user", id="admin-1", name="Ann Admin")
    produce(
        config,
        keyed(
            [
                good_change(
                    person=PersonRef(person_id="p-erase", email=ADDRESS),
                    source="marketing",
                    occurred_at=at,
                ),
                good_change(person=PersonRef(email=ADDRESS), occurred_at=at),
                good_change(
                    type="unsubscribe_removed",
                    person=PersonRef(person_id="p-erase", email=ADDRESS),
                    actor=admin,
                    channel="manual",
                    reason=f"{ADDRESS} asked to be put back",
                    occurred_at=at + timedelta(hours=1),
                ),
            ]
        ),
    )
    run_until_caught_up(config)
    assert NORMALISED in store_bytes(config), "the address is kept until it is forgotten"

    erased = json.loads(optout_sync(config, "forget", "p-erase", "--json").stdout)
    assert erased == {"erased": 1, "opted_out": True}
    assert NORMALISED not in store_bytes(config).lower()

    person = json.loads(optout_sync(config, "person", "p-erase", "--json").stdout)
    assert person["opted_out"] is True, "the recipient's own unsubscribe stands"
    assert [a["email"] for a in person["addresses"]] == [None]
    assert all(NORMALISED.decode() not in (e["reason"] or "") for e in person["history"])

    # The address arrives again: the same address, the same persons; its bytes are not kept.
    produce(config, keyed([good_change(person=PersonRef(email=ADDRESS.upper()))]))
    run_until_caught_up(config)
    found = json.loads(optout_sync(config, "person", ADDRESS, "--json").stdout)
    assert found["address"]["person_key"] == person["addresses"][0]["key"]
    assert found["address"]["opted_out"] is True
    assert [p["person_key"] for p in found["persons"]] == ["person:p-erase"]
    assert len(found["address"]["history"]) == 2
    assert NORMALISED not in store_bytes(config).lower()
