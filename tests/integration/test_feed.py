"""The analytics feed, read back by an independent client (kcat) after a publication interrupted
by SIGKILLs: every record valid against the published JSON Schema, every state change there
exactly once, in log order per person, and no address anywhere."""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import uuid
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jsonschema
import pytest

from adapters.settings import Settings
from consumers import bootstrap
from consumers.publisher import tracking_name
from domain.application import Change, ChangeKind
from domain.identity import aggregate_id, person_key
from domain.person import Provenance
from tests.integration.ingest_harness import REPO, env_of, isolated_settings, wait_for
from tests.integration.private_broker import PrivateBroker
from tests.integration.test_health_endpoints import free_port, get, metric, ready
from tests.tools import kcat_read

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

SCHEMA = json.loads((REPO / "docs/schema/state-change-v1.schema.json").read_text())
PERSONS = 12_000
KILLS = 6
T0 = datetime(2026, 11, 1, tzinfo=UTC)


def _change(kind: ChangeKind, who: str, at: datetime, source: str = "marketing") -> Change:
    actor, reason = (
        ("user", "asked") if kind is ChangeKind.UNSUBSCRIBE_REMOVED else ("recipient", None)
    )
    provenance = Provenance(
        uuid.uuid4(),
        source,
        actor,
        "admin" if actor == "user" else None,
        None,
        "manual",
        at,
        reason,
    )
    return Change(kind, person_key(who), provenance)


def seed(config: Settings) -> dict[uuid.UUID, list[bool]]:
    """Each person's changes, and the opt-out states they flip through, in order: an unsubscribe
    (opted out); for odd persons a later removal (not); for every fourth a later unsubscribe
    again; for every fifth a repeat dated earlier, which flips nothing."""
    expected: dict[uuid.UUID, list[bool]] = {}
    batches: list[list[Change]] = [[] for _ in range(4)]
    for i in range(PERSONS):
        who, at = f"feed-{i}", T0 + timedelta(seconds=i)
        flips = [True]
        batches[0].append(_change(ChangeKind.UNSUBSCRIBED, who, at, "sales"))
        if i % 2:
            batches[1].append(_change(ChangeKind.UNSUBSCRIBE_REMOVED, who, at + timedelta(hours=1)))
            flips.append(False)
        if i % 4 == 3:
            batches[2].append(_change(ChangeKind.UNSUBSCRIBED, who, at + timedelta(hours=2)))
            flips.append(True)
        if i % 5 == 0:
            batches[3].append(_change(ChangeKind.UNSUBSCRIBED, who, at - timedelta(days=1)))
        expected[aggregate_id(person_key(who))] = flips
    store = bootstrap.open_store(config, writer=True)
    try:
        for batch in batches:
            for start in range(0, len(batch), 500):
                store.record(batch[start : start + 500])
    finally:
        store.close()
    return expected


def publisher(config: Settings, log_path: Path) -> subprocess.Popen[bytes]:
    with log_path.open("ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "consumers", "-v", "publish", "--idle-exit", "3"],
            cwd=REPO, env=env_of(config), stdout=log, stderr=log,
        )  # fmt: skip


def test_the_feed_after_kills_holds_every_state_change_once_valid_and_in_order(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    config = isolated_settings(kafka_bootstrap, f"sqlite:///{tmp_path / 'e.sqlite'}", tmp_path)
    expected = seed(config)
    log_path = tmp_path / "publisher.log"
    store = bootstrap.open_store(config)
    positions_at_kills = []
    try:
        for kill in range(KILLS):
            process = publisher(config, log_path)
            wait_for(
                lambda runs=kill: log_path.read_text().count("publishing the feed") > runs,
                120,
                "the publisher to start",
                log_path.read_text,
            )
            try:  # a page (1,000 events, one transaction) takes some 50-100 ms here
                process.wait(timeout=random.uniform(0.05, 0.5))
            except subprocess.TimeoutExpired:
                os.kill(process.pid, signal.SIGKILL)
                process.wait()
            positions_at_kills.append(store.position(tracking_name(config)) or 0)
        final = publisher(config, log_path)
        assert final.wait(timeout=300) == 0, log_path.read_text()[-3000:]
        end = store.recorder.max_notification_id() or 0
        assert store.position(tracking_name(config)) == end
    finally:
        store.close()
    mid_run = [p for p in positions_at_kills if 0 < p < end]
    assert len(mid_run) >= KILLS // 2, f"kills mid-run: {positions_at_kills} of {end}"

    records = kcat_read(config.kafka_bootstrap_servers, config.topic_state)
    validator = jsonschema.Draft202012Validator(
        SCHEMA, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )
    seen: dict[uuid.UUID, list[dict[str, object]]] = defaultdict(list)
    for key, value in records:
        assert "@" not in value, "no address in the feed"
        record = json.loads(value)
        validator.validate(record)
        assert key == record["person"]
        seen[uuid.UUID(record["person"])].append(record)

    dedup_keys = [record["dedup_key"] for records in seen.values() for record in records]
    assert len(dedup_keys) == len(set(dedup_keys)), "no record twice"
    assert {person: [r["opted_out"] for r in rs] for person, rs in seen.items()} == expected
    for person_records in seen.values():
        positions = [r["position"] for r in person_records]
        assert positions == sorted(positions), "log order per person"
        assert all(r["kind"] == "opt_out_changed" for r in person_records)

    # The store's copy of the position lost (a crash between a commit and its write): the topic's
    # own records say where the feed ends, and nothing is published again.
    with sqlite3.connect(tmp_path / "e.sqlite") as database:
        database.execute(
            "DELETE FROM tracking WHERE application_name = ?", (tracking_name(config),)
        )
    again = publisher(config, log_path)
    assert again.wait(timeout=300) == 0, log_path.read_text()[-3000:]
    last_record = max(r["position"] for records in seen.values() for r in records)
    lines = log_path.read_text().splitlines()
    assert lines[-2].endswith(f"from log position {last_record}"), lines[-2]
    assert lines[-1].startswith("published 0 records"), lines[-1]
    assert len(kcat_read(config.kafka_bootstrap_servers, config.topic_state)) == len(records)


def test_a_publisher_waits_out_a_broker_outage_and_publishes_each_record_once(
    broker: PrivateBroker, tmp_path: Path
) -> None:
    config = isolated_settings(broker.bootstrap, f"sqlite:///{tmp_path / 'e.sqlite'}", tmp_path)
    store = bootstrap.open_store(config, writer=True)
    log_path = tmp_path / "publisher.log"
    port = free_port()
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "consumers", "-v", "publish"], cwd=REPO,
            env=env_of(config, OPTOUT_METRICS_PORT=str(port)), stdout=log, stderr=log,
        )  # fmt: skip
    try:
        store.record([_change(ChangeKind.UNSUBSCRIBED, f"before-{i}", T0) for i in range(100)])
        wait_for(lambda: metric(port, "optout_feed_records_total") == 100, 120,
                 "the first 100 records", log_path.read_text)  # fmt: skip
        broker.stop()
        store.record([_change(ChangeKind.UNSUBSCRIBED, f"during-{i}", T0) for i in range(100)])
        wait_for(lambda: not ready(port), 120, "/readyz to say not ready", log_path.read_text)
        assert "does not answer" in get(port, "/readyz")[1]
        broker.start()
        wait_for(lambda: metric(port, "optout_feed_records_total") == 200, 180,
                 "the records recorded during the outage", log_path.read_text)  # fmt: skip
        assert ready(port)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
        store.close()
    records = kcat_read(config.kafka_bootstrap_servers, config.topic_state)
    dedup_keys = [json.loads(value)["dedup_key"] for _, value in records]
    assert len(dedup_keys) == len(set(dedup_keys)) == 200
