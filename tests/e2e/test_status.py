"""`optout-sync status` as an operator or a monitor runs it, on a real broker and a real store:
`--json` reflects a seeded situation exactly (a known inbound lag, 2 pending links, 1 failed
push, 3 dead letters) and exits 1; a clean one exits 0; a store or broker that cannot be read
exits 2 naming the setting."""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast
from zoneinfo import ZoneInfo

import pytest
from eventsourcing.persistence import Tracking
from kafka import KafkaProducer

from adapters.event_store import AddressKeys, environment
from domain.application import Change, ChangeKind, ChangeRecorder
from domain.identity import person_key, to_18
from domain.nightly_pass import NightlyPass
from domain.person import Person, Provenance
from domain.push import Accepted, Refused, record_outcomes
from tests.e2e.cli import isolated_env, optout_sync

KEY = "s" * 32
KEYS = AddressKeys(KEY.encode())
AT = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
CONTACT_C, CONTACT_D = to_18("0035g00000StAtC"), to_18("0035g00000StAtD")
LEAD_E = to_18("00Q5g00000StAtE")


def change(
    kind: ChangeKind,
    person: str,
    *,
    email: str | None = None,
    salesforce_id: str | None = None,
    minutes: int = 0,
) -> Change:
    recipient = kind is ChangeKind.UNSUBSCRIBED and email is not None
    provenance = Provenance(
        uuid.uuid4(),
        "marketing" if recipient else "sales",
        "recipient" if recipient else "user",
        None if recipient else "rep-1",
        None if recipient else "Rep One",
        "email_link" if recipient else "manual",
        AT + timedelta(minutes=minutes),
        "asked by phone" if kind is ChangeKind.UNSUBSCRIBE_REMOVED else None,
    )
    mailbox = KEYS.key_of(email) if email else None
    return Change(kind, person_key(person), provenance, mailbox, email, salesforce_id)


def status(env: dict[str, str], *args: str) -> tuple[int, dict[str, Any]]:
    shown = optout_sync("status", "--json", *args, env=env)
    assert shown.returncode in (0, 1), shown.stdout + shown.stderr
    return shown.returncode, json.loads(shown.stdout)


def produce(env: dict[str, str], partition: int, count: int, prefix: str) -> None:
    sender = KafkaProducer(bootstrap_servers=env["KAFKA_BOOTSTRAP_SERVERS"], acks="all")
    for index in range(count):
        sender.send(
            env["OPTOUT_TOPIC_INBOUND"],
            key=f"{prefix}-{index}".encode(),
            value=b"{not json",
            partition=partition,
        )
    sender.flush(timeout=60)
    sender.close()


def seed_persons(url: str) -> tuple[int, int]:
    """2 pending links (one also carries an address its recipient opted out: not a third), 1
    failed push, 1 pending push, 1 accepted, 1 removed; the pusher's position and 2 API calls.
    Returns (the pusher's position, the log's head)."""
    store = ChangeRecorder(env=environment(url))
    try:
        store.record(
            [
                change(ChangeKind.UNSUBSCRIBED, "p-a", email="ada@example.com"),
                change(ChangeKind.UNSUBSCRIBED, "p-b", minutes=1),
                change(ChangeKind.UNSUBSCRIBED, "p-c", salesforce_id=CONTACT_C, minutes=2),
                change(ChangeKind.UNSUBSCRIBED, "p-d", salesforce_id=CONTACT_D, minutes=3),
                change(ChangeKind.UNSUBSCRIBED, "p-e", salesforce_id=LEAD_E, minutes=4),
                change(ChangeKind.UNSUBSCRIBED, "p-f", minutes=5),
            ]
        )
        store.record([change(ChangeKind.UNSUBSCRIBE_REMOVED, "p-f", minutes=6)])
        pusher_at = store.recorder.max_notification_id() or 0
        now = time.time()
        record_outcomes(
            store,
            [
                Refused(person_key("p-c"), CONTACT_C, "Contact", "INVALID_ID", "gone", False),
                Accepted(
                    person_key("p-e"),
                    LEAD_E,
                    "Lead",
                    "HasOptedOutOfEmail",
                    LEAD_E,
                    None,
                    datetime.now(UTC),
                ),
            ],
            Tracking("pusher", pusher_at),
            calls=[now - 60, now - 30],
        )
        return pusher_at, store.recorder.max_notification_id() or 0
    finally:
        store.close()


@pytest.fixture
def env(kafka_bootstrap: str, fresh_postgres_url: str, tmp_path: Path) -> dict[str, str]:
    return isolated_env(
        kafka_bootstrap,
        tmp_path,
        OPTOUT_DATABASE_URL=fresh_postgres_url,
        OPTOUT_ADDRESS_KEY=KEY,
        OPTOUT_SALESFORCE_DAILY_BUDGET="100",
        OPTOUT_NIGHTLY_SYNC="off",
    )


def test_status_json_reflects_a_seeded_situation_exactly(
    env: dict[str, str], fresh_postgres_url: str
) -> None:
    assert optout_sync("init", env=env).returncode == 0
    produce(env, 0, 3, "dead")  # ingested below: 3 dead letters, partition 0 stored up to 2
    ingest = optout_sync("ingest", "--no-prepare", "--idle-exit", "3", "--json", env=env)
    assert ingest.returncode == 0, ingest.stderr
    assert json.loads(ingest.stdout)["dead_lettered"] == 3
    produce(env, 0, 2, "late")  # not ingested: the known lag
    produce(env, 1, 3, "late")
    pusher_at, head = seed_persons(fresh_postgres_url)

    code, found = status(env)

    assert code == 1
    inbound = found["inbound"]
    assert inbound["topic"] == env["OPTOUT_TOPIC_INBOUND"] and inbound["exists"]
    assert [
        (p["partition"], p["end"], p["stored"], p["lag"], p["gap"]) for p in inbound["partitions"]
    ] == [
        (0, 5, 2, 2, False),
        (1, 3, None, 3, False),
        (2, 0, None, 0, False),
        (3, 0, None, 0, False),
    ]
    assert inbound["lag"] == 5
    assert found["persons"] == {"pending_links": 2, "pending_pushes": 1, "failed_pushes": 1}
    assert found["dead_letters"] == {
        "topic": f"{env['OPTOUT_TOPIC_INBOUND']}.dead-letter",
        "total": 3,
        "not_redriven": 3,
    }
    assert found["api_calls"] == {
        "budget": "100",
        "window_hours": 24,
        "used": 2,
        "limit": 100,
        "left": 98,
        "nightly_used": 0,
    }
    assert found["nightly"] == {
        "enabled": False,
        "last": None,
        "next_at": None,
        "overdue_slot": None,
    }
    assert found["log_head"] == head
    followers = {f["name"]: f for f in found["followers"]}
    assert followers["pusher"] == {
        "name": "pusher",
        "kind": "pusher",
        "position": pusher_at,
        "lag": head - pusher_at,
    }
    feed = f"feed:{env['OPTOUT_TOPIC_STATE']}"
    assert followers[feed] == {"name": feed, "kind": "feed", "position": None, "lag": head}
    assert {"person_state", "mailbox_index", "audit"} <= followers.keys()
    assert found["attention"] == [
        "1 pushes refused by Salesforce for good",
        "3 dead letters not re-driven",
    ]

    # A lag above --max-lag needs attention too; a lag at it does not.
    code, found = status(env, "--max-lag", "2")
    assert code == 1
    lagging = [reason for reason in found["attention"] if "not ingested" in reason]
    assert lagging == [f"{env['OPTOUT_TOPIC_INBOUND']}:1: 3 messages not ingested (> 2)"]

    # The same, for a person: a table and a summary, and the same exit code.
    shown = optout_sync("status", env=env)
    assert shown.returncode == 1, shown.stderr
    assert "pending links 2" in shown.stdout and "failed pushes 1" in shown.stdout
    assert "dead letters 3 (3 not re-driven)" in shown.stdout
    assert "needs attention" in shown.stdout

    # Re-driven letters no longer need attention (each went back to the inbound topic).
    redrive = optout_sync("dlq", "redrive", "--all", env=env)
    assert redrive.returncode == 0, redrive.stderr
    code, found = status(env)
    assert found["dead_letters"]["total"] == 3 and found["dead_letters"]["not_redriven"] == 0
    assert found["inbound"]["lag"] == 5 + 3
    assert found["attention"] == ["1 pushes refused by Salesforce for good"] and code == 1


def test_a_clean_situation_exits_0(kafka_bootstrap: str, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'events.sqlite'}"
    env = isolated_env(
        kafka_bootstrap,
        tmp_path,
        OPTOUT_DATABASE_URL=url,
        OPTOUT_ADDRESS_KEY=KEY,
        OPTOUT_NIGHTLY_SYNC="on",
        OPTOUT_NIGHTLY_AT="03:15",
        OPTOUT_NIGHTLY_ZONE="Europe/Paris",
    )
    assert optout_sync("init", env=env).returncode == 0
    store = ChangeRecorder(env=environment(url))
    try:
        store.record([change(ChangeKind.UNSUBSCRIBED, "p-e", salesforce_id=LEAD_E)])
        accepted = Accepted(
            person_key("p-e"), LEAD_E, "Lead", "HasOptedOutOfEmail", LEAD_E, None, datetime.now(UTC)
        )
        record_outcomes(store, [accepted], None)
    finally:
        store.close()

    code, found = status(env)

    assert code == 0, found["attention"]
    assert found["attention"] == []
    assert found["persons"] == {"pending_links": 0, "pending_pushes": 0, "failed_pushes": 0}
    assert found["dead_letters"]["total"] == 0 and found["inbound"]["lag"] == 0
    # A share of the org's maximum: not known without asking Salesforce, which status never does.
    assert found["api_calls"]["budget"] == "20%"
    assert found["api_calls"]["limit"] is None and found["api_calls"]["left"] is None
    nightly = found["nightly"]
    assert nightly["enabled"] and nightly["last"] is None
    next_at = datetime.fromisoformat(nightly["next_at"])
    checked_at = datetime.fromisoformat(found["checked_at"])
    assert checked_at < next_at <= checked_at + timedelta(hours=25)
    local = next_at.astimezone(ZoneInfo("Europe/Paris"))
    assert (local.hour, local.minute) == (3, 15)

    shown = optout_sync("status", env=env)
    assert shown.returncode == 0 and "all is well" in shown.stdout

    # A failed nightly pass (the latest one) needs attention; so does a spent budget.
    store = ChangeRecorder(env=environment(url))
    try:
        ended = datetime.now(UTC)
        store.save_with_position([cast(Person, failed_pass(ended))], None)
        record_outcomes(store, [], None, calls=[time.time() - 5, time.time() - 4])
    finally:
        store.close()
    code, found = status({**env, "OPTOUT_SALESFORCE_DAILY_BUDGET": "2"})
    assert code == 1
    assert found["nightly"]["last"] == {
        "slot": "manual:x",
        "started_at": (ended - timedelta(minutes=2)).isoformat().replace("+00:00", "Z"),
        "finished_at": ended.isoformat().replace("+00:00", "Z"),
        "outcome": "failed",
        "error": "the org said no",
    }
    assert found["api_calls"]["nightly_used"] == 7
    assert found["api_calls"]["used"] == 2 and found["api_calls"]["left"] == 0
    assert found["attention"] == [
        "the Salesforce API budget is spent: 2 of 2 calls",
        "the last nightly pass (manual:x) failed: the org said no",
    ]


def failed_pass(ended: datetime) -> NightlyPass:
    return NightlyPass(
        slot="manual:x",
        started_at=ended - timedelta(minutes=2),
        finished_at=ended,
        outcome="failed",
        error="the org said no",
        read=0,
        imported=0,
        pushed=0,
        accepted=0,
        failed=0,
        pending_link=0,
        conflicts=[],
        api_calls=7,
        log_position=0,
    )


def test_status_that_cannot_be_read_exits_2_naming_the_setting(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'events.sqlite'}"
    env = isolated_env(kafka_bootstrap, tmp_path, OPTOUT_DATABASE_URL=url, OPTOUT_ADDRESS_KEY=KEY)

    missing = optout_sync("status", "--json", env=env)
    assert missing.returncode == 2 and "OPTOUT_DATABASE_URL" in missing.stderr
    assert missing.stdout == "" and not (tmp_path / "events.sqlite").exists(), "nothing created"

    assert optout_sync("init", env=env).returncode == 0
    no_broker = optout_sync(
        "status", "--json", env={**env, "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9"}
    )
    assert no_broker.returncode == 2 and "KAFKA_BOOTSTRAP_SERVERS" in no_broker.stderr

    no_server = {**env, "OPTOUT_DATABASE_URL": "postgresql://optout@127.0.0.1:9/optout"}
    unreachable = optout_sync("status", env=no_server)
    assert unreachable.returncode == 2 and "OPTOUT_DATABASE_URL" in unreachable.stderr

    helped = optout_sync("status", "--help", env=env)
    assert helped.returncode == 0
    assert "--json" in helped.stdout and "--max-lag" in helped.stdout and "Exits 0" in helped.stdout
