"""The project's local services: `optout-sync services` up/status/down, and round-trips through the
broker and database the session fixtures provide."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from kafka import KafkaConsumer, KafkaProducer

from devservices import broker as local_kafka
from devservices import database as local_postgres
from devservices.process import process_start_time
from devservices.settings import load
from tests.integration.private_broker import PrivateBroker, free_port_pair
from tests.kafka_scratch import scratch_suffix

REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def second_instance(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """The environment of a second, private pair of services (other ports, other state dir), so
    that `down` here never touches the services the rest of the session uses."""
    state_dir = tmp_path_factory.mktemp("services-state")
    env = {
        **os.environ,
        "OPTOUT_STATE_DIR": str(state_dir),
        "OPTOUT_KAFKA_PORT": str(free_port_pair()),
        "OPTOUT_POSTGRES_PORT": str(_free_port()),
    }
    env.pop("KAFKA_BOOTSTRAP_SERVERS", None)
    yield env
    # Whatever the test did, leave nothing running; then drop the cluster kept outside the state dir.
    _cli(env, "down")
    shutil.rmtree(local_postgres.data_dir(load(env)), ignore_errors=True)


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """`optout-sync services ...` as a separate process, as an operator runs it."""
    return subprocess.run(
        [sys.executable, "-c", "from consumers.cli import main; main()", "services", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
        check=False,
    )


def _json(result: subprocess.CompletedProcess[str]) -> dict[str, dict[str, Any]]:
    assert result.returncode == 0, result.stderr
    return {entry["name"]: entry for entry in json.loads(result.stdout)}


def _process_exists(pid: int) -> bool:
    return process_start_time(pid) is not None


def _children(pid: int) -> list[int]:
    found = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True, check=False)
    return [int(line) for line in found.stdout.split()]


@pytest.mark.kafka
@pytest.mark.postgres
def test_up_is_idempotent_status_reports_and_down_leaves_no_process(
    second_instance: dict[str, str],
) -> None:
    first = _json(_cli(second_instance, "up", "--json"))
    assert {name: entry["started"] for name, entry in first.items()} == {
        "kafka": True,
        "postgres": True,
    }
    pids = {name: entry["pid"] for name, entry in first.items()}
    assert all(_process_exists(pid) for pid in pids.values())

    again = _json(_cli(second_instance, "up", "--json"))
    assert {name: (entry["started"], entry["pid"]) for name, entry in again.items()} == {
        name: (False, pid) for name, pid in pids.items()
    }

    status = _json(_cli(second_instance, "status", "--json"))
    assert {name: (entry["state"], entry["pid"]) for name, entry in status.items()} == {
        name: ("running", pid) for name, pid in pids.items()
    }
    assert status["kafka"]["port"] == int(second_instance["OPTOUT_KAFKA_PORT"])
    assert Path(status["kafka"]["log_path"]).is_file()

    # PostgreSQL's workers are children of the postmaster: none may outlive it.
    workers = _children(pids["postgres"])
    assert workers

    down = _cli(second_instance, "down")
    assert down.returncode == 0, down.stderr
    assert not [pid for pid in [*pids.values(), *workers] if _process_exists(pid)]
    kafka_log = Path(status["kafka"]["log_path"]).read_text()
    assert "shut down completed" in kafka_log, kafka_log[-2000:]

    after = _json(_cli(second_instance, "status", "--json"))
    assert {entry["state"] for entry in after.values()} == {"stopped"}
    assert "was not running" in _cli(second_instance, "down").stdout


@pytest.mark.kafka
def test_a_message_produced_to_the_broker_is_consumed_back(kafka_bootstrap: str) -> None:
    topic = f"test.local-services.{scratch_suffix(kafka_bootstrap)}"
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    try:
        producer.send(topic, key=b"person-hash", value=b'{"hello": "kafka"}').get(timeout=60)
    finally:
        producer.close()
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=kafka_bootstrap,
        group_id=f"test-local-services-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
        consumer_timeout_ms=30_000,
    )
    try:
        received = next(iter(consumer))
    finally:
        consumer.close()
    assert (received.key, received.value) == (b"person-hash", b'{"hello": "kafka"}')


@pytest.mark.postgres
def test_a_row_written_to_a_fresh_database_is_read_back(fresh_postgres_url: str) -> None:
    with psycopg.connect(fresh_postgres_url) as connection:
        tables = connection.execute(
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"
        ).fetchone()
        assert tables == (0,)
        connection.execute("CREATE TABLE optout (person text PRIMARY KEY, at timestamptz)")
        connection.execute("INSERT INTO optout VALUES ('p-1', now())")
    with psycopg.connect(fresh_postgres_url) as connection:
        assert connection.execute("SELECT person FROM optout").fetchall() == [("p-1",)]


def test_a_new_cluster_id_never_reads_as_an_option() -> None:
    """A URL-safe base64 id starts with '-' once in 64; the storage tool took it for an option."""
    made = [local_kafka.new_cluster_id() for _ in range(5000)]
    assert not [cluster_id for cluster_id in made if cluster_id.startswith("-")]
    assert {len(cluster_id) for cluster_id in made} == {22}


@pytest.mark.kafka
def test_a_leftover_cluster_id_with_a_leading_dash_is_replaced_and_the_broker_starts(
    tmp_path: Path,
) -> None:
    state = tmp_path / "state"
    (state / "kafka").mkdir(parents=True)
    (state / "kafka" / "cluster-id").write_text("-5DyHb1lTAG2ZRk0Rn5x1Q")  # left by a failed start
    broker = PrivateBroker(state)
    try:
        broker.start()
        assert local_kafka.broker_answers(broker.bootstrap)
        assert not (state / "kafka" / "cluster-id").read_text().startswith("-")
    finally:
        broker.close()
