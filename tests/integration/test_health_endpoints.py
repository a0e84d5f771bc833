"""/metrics, /healthz and /readyz of the long-running processes (an ingest worker, the pusher, the
read models' keeper), scraped over HTTP while they run: the counts and the lag move as the run
moves, and readiness follows the broker, the pusher lock."""

from __future__ import annotations

import signal
import socket
import sqlite3
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from adapters.inbound import PersonRef
from adapters.settings import Settings
from sandbox import Sandbox, running_sandbox
from tests.factories import good_change
from tests.integration.ingest_harness import (
    REPO,
    Worker,
    Workers,
    dying_with_the_test,
    env_of,
    isolated_settings,
    keyed,
    produce,
    wait_for,
)
from tests.integration.private_broker import PrivateBroker
from tests.integration.test_ingest import run_until_caught_up
from tests.salesforce.conftest import flag, org_env

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


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    with running_sandbox() as running:
        yield running


def start_verb(
    config: Settings, log_path: Path, args: list[str], **env: str
) -> tuple[subprocess.Popen[bytes], int, Callable[[], str]]:
    """A long-running verb serving its endpoints on a port of its own; its log's tail."""
    port = free_port()
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            dying_with_the_test([sys.executable, "-m", "consumers", "-v", *args]),
            cwd=REPO,
            env=env_of(config, OPTOUT_METRICS_PORT=str(port), **env),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
        )
    return process, port, lambda: log_path.read_text(errors="replace")[-3000:]


def stop(process: subprocess.Popen[bytes], tail: Callable[[], str]) -> None:
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 0, tail()


def test_a_running_pusher_shows_its_pushes_and_calls_and_a_second_one_waits_not_ready(
    config: Settings, sandbox: Sandbox, tmp_path: Path
) -> None:
    first, port, tail = start_verb(config, tmp_path / "push-1.log", ["push"], **org_env(sandbox))
    processes = [first]
    try:
        wait_for(lambda: ready(port), 120, "the pusher to be ready", tail)
        assert get(port, "/healthz") == (200, "ok\n")
        assert metric(port, "optout_push_records_total", outcome="accepted") == 0
        calls = metric(port, "optout_salesforce_api_calls_total")
        second, waiting_port, waiting_tail = start_verb(
            config, tmp_path / "push-2.log", ["push"], **org_env(sandbox)
        )
        processes.append(second)
        wait_for(
            lambda: "waiting for the pusher lock" in get(waiting_port, "/readyz")[1],
            120,
            "the second pusher to say why it is not ready",
            waiting_tail,
        )
        assert get(waiting_port, "/readyz")[0] == 503
        assert metric(waiting_port, "optout_ready") == 0
        assert get(waiting_port, "/healthz")[0] == 200, "alive, only not ready"

        records = [sandbox.insert("Contact", LastName=f"M{n}") for n in range(2)]
        changes = [
            good_change(person=PersonRef(person_id=f"p-m{n}", salesforce_id=record))
            for n, record in enumerate(records)
        ]
        gone = "0035g00000ZzZzZ"  # a Contact the org does not have: refused for good
        changes.append(good_change(person=PersonRef(person_id="p-gone", salesforce_id=gone)))
        produce(config, keyed(changes))
        run_until_caught_up(config).store.close()
        wait_for(
            lambda: metric(port, "optout_push_records_total", outcome="accepted") == 2,
            120,
            "2 pushes accepted on /metrics",
            tail,
        )
        wait_for(
            lambda: metric(port, "optout_push_records_total", outcome="refused") == 1,
            60,
            "1 push refused on /metrics",
            tail,
        )
        assert all(flag(sandbox, record) for record in records)
        assert metric(port, "optout_salesforce_api_calls_total") > calls
        assert metric(port, "optout_push_position") > 0
        assert metric(port, "optout_push_lag") == 0
        assert metric(port, "optout_ready") == 1
        assert not ready(waiting_port), "still waiting for the lock"
        for process, process_tail in ((first, tail), (second, waiting_tail)):
            stop(process, process_tail)
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=60)


def test_projections_run_shows_each_read_models_position_and_lag(
    config: Settings, tmp_path: Path
) -> None:
    produce(config, keyed([good_change(person=PersonRef(person_id="p-rm-1"))]))
    run_until_caught_up(config).store.close()
    process, port, tail = start_verb(config, tmp_path / "projections.log", ["projections", "run"])
    try:
        wait_for(lambda: ready(port), 120, "the read models' keeper to be ready", tail)
        models = ("person_state", "mailbox_index", "audit")

        def positions() -> list[float]:
            return [metric(port, "optout_projection_position", read_model=m) for m in models]

        wait_for(lambda: min(positions()) > 0, 120, "every read model to catch up", tail)
        caught_up = positions()
        assert [metric(port, "optout_projection_lag", read_model=m) for m in models] == [0] * 3
        produce(config, keyed([good_change(person=PersonRef(person_id="p-rm-2"))]))
        run_until_caught_up(config).store.close()
        wait_for(
            lambda: all(now > then for now, then in zip(positions(), caught_up, strict=True)),
            120,
            "every read model to move on",
            tail,
        )
        assert metric(port, "optout_ready") == 1
        stop(process, tail)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=60)
