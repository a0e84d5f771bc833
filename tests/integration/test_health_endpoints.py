"""/metrics, /healthz and /readyz of an ingest worker, scraped over HTTP while it runs: the counts
and the lag move as the run moves, and readiness follows its broker."""

from __future__ import annotations

import socket
import sqlite3
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from adapters.inbound import PersonRef
from adapters.settings import Settings
from tests.factories import good_change
from tests.integration.ingest_harness import (
    Worker,
    Workers,
    isolated_settings,
    keyed,
    produce,
    wait_for,
)
from tests.integration.private_broker import PrivateBroker

pytestmark = [pytest.mark.kafka]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()
    except OSError as error:  # not listening yet
        return 0, str(error)


def samples(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    status, text = get(port, "/metrics")
    if status != 200:
        return {}
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def metric(port: int, name: str, **labels: str) -> float:
    return samples(port).get((name, tuple(sorted(labels.items()))), -1.0)


def total_lag(port: int) -> float:
    found = samples(port)
    values = [v for (name, _), v in found.items() if name == "optout_ingest_consumer_lag"]
    return sum(values) if values else -1.0


def ready(port: int) -> bool:
    return get(port, "/readyz")[0] == 200


def start_worker(ingest_workers: Workers, config: Settings) -> tuple[Worker, int]:
    port = free_port()
    worker = ingest_workers.start(config, OPTOUT_METRICS_PORT=str(port))
    wait_for(lambda: ready(port), 120, "the worker to be ready", worker.tail)
    return worker, port


def test_metrics_move_as_the_run_moves(
    kafka_bootstrap: str, tmp_path: Path, ingest_workers: Workers
) -> None:
    database = tmp_path / "events.sqlite"
    config = isolated_settings(kafka_bootstrap, f"sqlite:///{database}", tmp_path)
    worker, port = start_worker(ingest_workers, config)
    assert get(port, "/healthz") == (200, "ok\n")
    assert metric(port, "optout_ingest_changes_total", outcome="recorded") == 0
    assert metric(port, "optout_ready") == 1

    # The store held by another writer: the worker fetches the changes but cannot store them.
    holder = sqlite3.connect(database, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        changes = [good_change(person=PersonRef(person_id=f"m-{i}")) for i in range(10)]
        produce(config, keyed(changes))
        wait_for(lambda: total_lag(port) == 10, 120, "a lag of 10 on /metrics", worker.tail)
        assert metric(port, "optout_ingest_changes_total", outcome="recorded") == 0
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    wait_for(
        lambda: metric(port, "optout_ingest_changes_total", outcome="recorded") == 10,
        120,
        "10 changes recorded on /metrics",
        worker.tail,
    )
    assert total_lag(port) == 0

    produce(config, [(b"bad", b"{not json")])
    wait_for(
        lambda: metric(port, "optout_dead_letters_total") == 1,
        120,
        "1 dead letter on /metrics",
        worker.tail,
    )
    assert metric(port, "optout_ingest_changes_total", outcome="dead_lettered") == 1
    assert metric(port, "optout_ingest_partitions") == config.topic_partitions
    assert "process_cpu_seconds_total" in get(port, "/metrics")[1]
    assert get(port, "/nowhere")[0] == 404
    assert worker.stop() == 0


@pytest.mark.slow
def test_readyz_is_not_ready_while_the_broker_is_stopped_and_ready_after(
    broker: PrivateBroker, tmp_path: Path, ingest_workers: Workers
) -> None:
    config = isolated_settings(broker.bootstrap, f"sqlite:///{tmp_path / 'e.sqlite'}", tmp_path)
    worker, port = start_worker(ingest_workers, config)
    broker.stop()
    wait_for(lambda: not ready(port), 120, "/readyz to say not ready", worker.tail)
    status, body = get(port, "/readyz")
    assert status == 503 and "does not answer" in body, body
    assert metric(port, "optout_ready") == 0
    assert get(port, "/healthz")[0] == 200, "alive, only not ready"

    broker.start()
    wait_for(lambda: ready(port), 180, "/readyz to be ready again", worker.tail)
    produce(config, keyed([good_change(person=PersonRef(person_id="after"))]))
    wait_for(
        lambda: metric(port, "optout_ingest_changes_total", outcome="recorded") == 1,
        120,
        "the change after the outage recorded",
        worker.tail,
    )
    assert worker.stop() == 0
