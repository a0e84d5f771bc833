"""`optout-sync nightly` as an operator runs it, in its own processes: the dry run that writes
nothing anywhere (store, Kafka, Salesforce), a pass SIGKILLed midway and run again, two
schedulers starting at once, the history, and the switch that turns the pass off."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from datetime import datetime, timedelta
from datetime import time as dt_time
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from adapters.settings import Settings
from consumers.nightly import tracking_name
from domain.identity import RecordType
from domain.nightly_pass import passes
from sandbox import Sandbox
from tests.e2e.cli import optout_sync
from tests.integration.ingest_harness import (
    REPO,
    dying_with_the_test,
    end_offsets,
    env_of,
    isolated_settings,
    wait_for,
)
from tests.integration.nightly_org import (
    here,
    org,
    pulled,
    reading,
    record,
    removed,
    settings_for,
    store_url,
    unsubscribed,
)
from tests.integration.test_health_endpoints import free_port, metric
from tests.salesforce.conftest import org_env

__all__ = ["org", "store_url"]
pytestmark = [pytest.mark.sandbox, pytest.mark.timeout(300)]


def nightly_env(config: Settings, org: Sandbox, **extra: str) -> dict[str, str]:
    return env_of(config, **{**org_env(org), "OPTOUT_NIGHTLY_SYNC": "on", **extra})


def state(config: Settings) -> tuple[object, ...]:
    """Everything the store holds that a pass could change."""
    store = reading(config)
    try:
        return (
            store.recorder.max_notification_id(),
            store.position(tracking_name(RecordType.CONTACT)),
            store.position(tracking_name(RecordType.LEAD)),
            len(list(passes(store))),
        )
    finally:
        store.close()


def test_a_dry_run_prints_the_plan_and_writes_nothing_anywhere(
    org: Sandbox, kafka_bootstrap: str, tmp_path: Path
) -> None:
    config = isolated_settings(kafka_bootstrap, f"sqlite:///{tmp_path / 'e.sqlite'}", tmp_path)
    env = nightly_env(config, org)
    checked = record(org, "Contact", checked=True)
    owed = record(org, "Lead")
    conflict = record(org, "Contact", checked=True)
    here(
        config,
        unsubscribed("p-owed", owed),
        unsubscribed("p-c", conflict, hours_ago=3),
        removed("p-c", conflict, hours_ago=2),
    )
    before = state(config)
    topics = (config.topic_inbound, config.topic_dead_letter, config.topic_redrives)
    kafka_before = {topic: end_offsets(config, topic) for topic in topics}
    records_before = {r: org.record(r) for r in (checked, owed, conflict)}
    org.clear_calls()

    done = optout_sync("nightly", "--dry-run", "--json", env=env)
    assert done.returncode == 0, done.stderr
    plan = json.loads(done.stdout)
    assert (plan["to_import"], plan["to_push"], plan["push_by"]) == (2, 1, "collections")
    assert plan["conflicts"] == [{"record_id": conflict, "person_key": "person:p-c"}]
    assert plan["full_reads"] == ["Contact", "Lead"]
    # A first pass: two Bulk queries (3 each), the field's describe (2), one collections call.
    assert plan["estimated_api_calls"] == 9

    assert state(config) == before
    assert {topic: end_offsets(config, topic) for topic in topics} == kafka_before
    assert {r: org.record(r) for r in records_before} == records_before
    calls = org.call_log
    assert calls and {c.method for c in calls} == {"GET"}, [(c.method, c.path) for c in calls]

    human = optout_sync("nightly", "--dry-run", env=env)
    assert human.returncode == 0, human.stderr
    assert "to import: 2 unsubscribes" in human.stdout
    assert f"{conflict} (person:p-c): removed here, checked there" in human.stdout


def test_a_pass_sigkilled_midway_and_run_again_records_each_change_once(
    org: Sandbox, store_url: str, tmp_path: Path
) -> None:
    config = settings_for(org, store_url, tmp_path)
    env = nightly_env(config, org)
    wanted = {record(org, "Contact", checked=True) for _ in range(4000)}
    wanted |= {record(org, "Lead", checked=True) for _ in range(2000)}
    log_path = tmp_path / "first.log"

    def first_chunk_stored() -> bool:
        return state(config)[1] is not None

    with log_path.open("wb") as log:
        first = subprocess.Popen(
            dying_with_the_test([sys.executable, "-m", "consumers", "nightly", "--now"]),
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_for(first_chunk_stored, 120, "the first chunk of imports", log_path.read_text)
        finally:
            first.send_signal(signal.SIGKILL)
            first.wait(30)
    store = reading(config)
    try:
        before_kill = len(pulled(store))
        assert list(passes(store)) == []  # killed midway: the pass never ended
    finally:
        store.close()
    assert 0 < before_kill < len(wanted), before_kill  # killed inside the imports

    again = optout_sync("nightly", "--now", "--json", env=env)
    assert again.returncode == 0, again.stderr
    report = json.loads(again.stdout)
    store = reading(config)
    try:
        changes = pulled(store)
        assert len(changes) == len(wanted) == len({c.event_id for c in changes})
        assert {c.salesforce_id for c in changes} == wanted
        [done] = passes(store)
        assert done.outcome == "done" and done.imported == len(wanted) - before_kill
    finally:
        store.close()
    assert report["imported"] == len(wanted) - before_kill


def test_two_schedulers_starting_at_once_run_the_missed_pass_once(
    org: Sandbox, tmp_path: Path
) -> None:
    config = settings_for(org, f"sqlite:///{tmp_path / 'e.sqlite'}", tmp_path)
    env = nightly_env(config, org, OPTOUT_NIGHTLY_AT="20:00", OPTOUT_NIGHTLY_ZONE="Asia/Tokyo")
    for _ in range(300):
        record(org, "Contact", checked=True)
    logs = [tmp_path / f"scheduler-{n}.log" for n in range(2)]
    ports = [free_port() for _ in logs]
    processes = []
    for path, port in zip(logs, ports, strict=True):
        with path.open("wb") as log:
            processes.append(
                subprocess.Popen(
                    dying_with_the_test([sys.executable, "-m", "consumers", "nightly", "--quiet"]),
                    cwd=REPO,
                    env={**env, "OPTOUT_METRICS_PORT": str(port)},
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )

    def both_decided() -> bool:
        texts = [path.read_text() for path in logs]
        return all("read 300" in text or "already run" in text for text in texts)

    try:
        wait_for(
            both_decided,
            120,
            "both schedulers to run or skip the missed pass",
            lambda: "\n".join(path.read_text() for path in logs),
        )
        # Each scheduler's /metrics: one ran the pass, the other found it run; both know the next.
        tokyo = ZoneInfo("Asia/Tokyo")
        today = datetime.now(tokyo)
        next_at = datetime.combine(today.date(), dt_time(20, 0), tokyo)
        next_at += timedelta(days=1) if next_at <= today else timedelta(0)
        assert sorted(
            (metric(port, "optout_nightly_passes_total", outcome="done"),
             metric(port, "optout_nightly_passes_total", outcome="already_run"))
            for port in ports
        ) == [(0, 1), (1, 0)]  # fmt: skip
        for port in ports:
            assert metric(port, "optout_nightly_next_pass_timestamp_seconds") == next_at.timestamp()
            assert metric(port, "optout_ready") == 1
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        codes = [process.wait(30) for process in processes]
    assert codes == [0, 0], [path.read_text() for path in logs]
    store = reading(config)
    try:
        [recorded] = passes(store)
        assert recorded.imported == 300 and recorded.slot[:4].isdigit()
        assert len(pulled(store)) == 300
    finally:
        store.close()
    assert sum("already run" in path.read_text() for path in logs) == 1


def test_history_and_the_switch(org: Sandbox, tmp_path: Path) -> None:
    config = settings_for(org, f"sqlite:///{tmp_path / 'e.sqlite'}", tmp_path)
    record(org, "Lead", checked=True)
    off = optout_sync("nightly", "--now", env=nightly_env(config, org, OPTOUT_NIGHTLY_SYNC="off"))
    assert off.returncode != 0 and "OPTOUT_NIGHTLY_SYNC" in off.stderr
    assert state(config)[0] is None  # nothing written

    env = nightly_env(config, org)
    ran = optout_sync("nightly", "--now", env=env)
    assert ran.returncode == 0, ran.stderr
    assert "read 1, imported 1, pushed 0" in ran.stdout
    assert "nightly: reading checked Leads from Salesforce" in ran.stderr  # progress
    listed = optout_sync("nightly", "--history", "--json", env=env)
    assert listed.returncode == 0, listed.stderr
    [entry] = json.loads(listed.stdout)
    assert (entry["outcome"], entry["read"], entry["imported"], entry["conflicts"]) == (
        "done",
        1,
        1,
        [],
    )
    assert entry["api_calls"] >= 6 and entry["slot"].startswith("manual:")
    human = optout_sync("nightly", "--history", env=env)
    assert "done: read 1, imported 1" in human.stdout
    both = optout_sync("nightly", "--now", "--history", env=env)
    assert both.returncode != 0
