"""The read models' and the audit's command line, as an operator runs it, on SQLite and
PostgreSQL: `projections run | rebuild | status`, `audit report | export`, `person` reading the
read models; after `forget`, a rebuild and an export hold no byte of the address and every read
model still says opted out. No Kafka and no Salesforce are reachable: none is needed."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import pyarrow.parquet as pq
import pytest

from adapters.event_store import environment
from consumers.read_models import read_models
from domain.application import Change, ChangeKind, ChangeRecorder
from domain.identity import person_key
from domain.person import Provenance
from tests.e2e.cli import optout_sync
from tests.integration.read_model_stream import KEY, KEYS, store_url
from tests.integration.test_erasure import store_bytes

__all__ = ["store_url"]
ADDRESS = "Ada.Audit@Example.com"
NORMALISED = ADDRESS.lower().encode()
AT = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


def unsubscribe(person: str, source: str, *, email: str | None = None, minutes: int = 0) -> Change:
    actor = ("recipient", None) if source == "marketing" else ("user", "rep-7")
    provenance = Provenance(
        uuid.uuid4(),
        source,
        actor[0],
        actor[1],
        None,
        "email_link" if source == "marketing" else "manual",
        AT + timedelta(minutes=minutes),
        None,
    )
    mailbox = KEYS.key_of(email) if email else None
    return Change(ChangeKind.UNSUBSCRIBED, person_key(person), provenance, mailbox, email)


@pytest.fixture
def env(store_url: str, tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "OPTOUT_DATABASE_URL": store_url,
        "OPTOUT_ADDRESS_KEY": KEY,
        "OPTOUT_STATE_DIR": str(tmp_path / "state"),
        "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9",  # nothing listens: no verb here may need it
        "COLUMNS": "160",
    }


@pytest.fixture
def store(store_url: str) -> ChangeRecorder:
    recorder = ChangeRecorder(env=environment(store_url, create_table=True))
    recorder.record(
        [
            unsubscribe("p-sales", "sales", minutes=1),
            unsubscribe("p-ada", "marketing", email=ADDRESS, minutes=2),
            unsubscribe("p-ada-crm", "salesforce", email=ADDRESS.upper(), minutes=3),
        ]
    )
    return recorder


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    result = optout_sync(*args, env=env, timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def test_every_new_verb_has_help_and_refuses_bad_input_with_a_non_zero_exit(
    store: ChangeRecorder, env: dict[str, str], tmp_path: Path
) -> None:
    for verb in (
        ["projections"],
        ["projections", "run"],
        ["projections", "rebuild"],
        ["projections", "status"],
        ["audit"],
        ["audit", "report"],
        ["audit", "export"],
    ):
        assert "Usage:" in cli(*verb, "--help", env=env).stdout
    refused = [
        (["projections", "rebuild"], "name one read model"),
        (["projections", "rebuild", "person_state", "--all"], "name one read model"),
        (["projections", "rebuild", "nonesuch"], "nonesuch"),
        (["audit", "report", "--since", "yesterday"], "yesterday"),
        (["audit", "report", "--since", "2026-03-02T10:00:00"], "no offset"),
        (["audit", "report", "--since", "2026-03-02", "--until", "2026-03-01"], "--until"),
        (["audit", "export", "--format", "xlsx", str(tmp_path / "x")], "xlsx"),
        (
            ["audit", "export", "--format", "csv", str(tmp_path / "no" / "such" / "dir.csv")],
            "cannot write",
        ),
        (["person", "nobody"], "no such person"),
    ]
    for args, said in refused:
        result = optout_sync(*args, env=env)
        assert result.returncode != 0, args
        assert said in result.stderr and "Traceback" not in result.stderr, (args, result.stderr)
    broken = {**env, "OPTOUT_DATABASE_URL": "mysql://db/optout"}
    result = optout_sync("projections", "status", env=broken)
    assert result.returncode == 1 and "OPTOUT_DATABASE_URL" in result.stderr


def test_run_status_rebuild_report_and_export_with_json(
    store: ChangeRecorder, env: dict[str, str], tmp_path: Path
) -> None:
    before = json.loads(cli("projections", "status", "--json", env=env).stdout)
    assert {s["name"]: s["generation"] for s in before} == {
        "person_state": None,
        "mailbox_index": None,
        "audit": None,
    }
    assert all(s["lag"] == s["head"] > 0 for s in before)
    ran = json.loads(cli("projections", "run", "--idle-exit", "0.5", "--json", env=env).stdout)
    assert all(s["lag"] == 0 and s["generation"] == 1 for s in ran)
    head = ran[0]["head"]
    rebuilt = json.loads(cli("projections", "rebuild", "--all", "--json", env=env).stdout)
    assert sorted((r["name"], r["generation"], r["position"]) for r in rebuilt) == [
        ("audit", 2, head),
        ("mailbox_index", 2, head),
        ("person_state", 2, head),
    ]
    one = json.loads(cli("projections", "rebuild", "audit", "--json", env=env).stdout)
    assert [(r["name"], r["generation"]) for r in one] == [("audit", 3)]

    report = json.loads(cli("audit", "report", "--json", env=env).stdout)
    assert report["counts"] == {"sales": 1, "marketing": 1, "salesforce": 1}
    assert [(r["person_key"], r["source"]) for r in report["rows"]] == [
        ("person:p-sales", "sales"),
        ("person:p-ada", "marketing"),
        ("person:p-ada-crm", "salesforce"),
    ]
    window = ["--since", "2026-03-01T09:01:30Z", "--until", "2026-03-01T09:02:30+00:00"]
    narrow = json.loads(cli("audit", "report", *window, "--json", env=env).stdout)
    assert narrow["counts"] == {"sales": 0, "marketing": 1, "salesforce": 0}
    shown = cli("audit", "report", env=env).stdout
    assert "via sales      1" in shown and "person:p-ada-crm" in shown

    written = json.loads(
        cli("audit", "export", "--format", "csv", "--json", str(tmp_path / "a.csv"), env=env).stdout
    )
    assert written == {"file": str(tmp_path / "a.csv"), "format": "csv", "rows": 3}
    with (tmp_path / "a.csv").open() as exported:
        rows = list(csv.DictReader(exported))
    assert [r["source"] for r in rows] == ["sales", "marketing", "salesforce"]
    cli("audit", "export", "--format", "parquet", str(tmp_path / "a.parquet"), env=env)
    table = pq.read_table(tmp_path / "a.parquet")
    assert table.column("person_key").to_pylist() == [r["person_key"] for r in rows]
    assert table.schema.field("position").type == "int64"

    # An email finds every person carrying it, from the mailbox index.
    found = json.loads(cli("person", ADDRESS, "--json", env=env).stdout)
    assert found["address"]["opted_out"] is True
    assert [p["person_key"] for p in found["persons"]] == ["person:p-ada", "person:p-ada-crm"]


def test_after_forget_a_rebuild_and_an_export_hold_no_byte_of_the_address_and_the_opt_out_stays(
    store: ChangeRecorder, env: dict[str, str], store_url: str, tmp_path: Path
) -> None:
    cli("projections", "run", "--idle-exit", "0.5", env=env)
    cli(
        "audit", "export", "--format", "csv", "--with-emails", str(tmp_path / "before.csv"), env=env
    )
    assert NORMALISED in (tmp_path / "before.csv").read_bytes().lower(), (
        "the join shows it until forgotten"
    )

    assert json.loads(cli("forget", ADDRESS, "--json", env=env).stdout)["erased"] == 1
    cli("projections", "rebuild", "--all", env=env)
    for file_format in ("csv", "parquet"):
        path = tmp_path / f"after.{file_format}"
        cli("audit", "export", "--format", file_format, "--with-emails", str(path), env=env)
        assert NORMALISED not in path.read_bytes().lower()
    assert NORMALISED not in store_bytes(SimpleNamespace(database_url=store_url)).lower()

    mailbox = KEYS.key_of(ADDRESS)
    models = read_models(store)
    with models.reading(("rm_person_state", "rm_mailboxes", "rm_audit")) as select:
        persons = dict(select("SELECT person_key, opted_out FROM rm_person_state"))
        mailboxes = dict(select("SELECT mailbox, opted_out FROM rm_mailboxes"))
        audited = select("SELECT person_key FROM rm_audit WHERE mailbox = ?", (mailbox,))
    models.close()
    assert persons["person:p-ada"] == persons["person:p-ada-crm"] == persons[mailbox] == 1
    assert mailboxes == {mailbox: 1}
    assert sorted(key for (key,) in audited) == ["person:p-ada", "person:p-ada-crm"]
    person = json.loads(cli("person", "p-ada", "--json", env=env).stdout)
    assert person["opted_out"] is True and person["addresses"][0]["email"] is None
