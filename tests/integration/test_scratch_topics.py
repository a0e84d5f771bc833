"""The suite keeps the shared broker small: a test's topics go when it ends, a fresh session deletes
what earlier runs left, and a broker whose partitions would exceed the machine's open-file limit
refuses to start instead of dying of "Too many open files" mid-run."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from contextlib import closing
from pathlib import Path

import pytest
from kafka import KafkaAdminClient
from kafka.admin import NewTopic

from devservices import broker as local_kafka
from devservices.settings import load
from tests import kafka_scratch
from tests.integration.ingest_harness import REPO, wait_for
from tests.integration.private_broker import PrivateBroker, free_port_pair


def _topics(bootstrap: str) -> set[str]:
    with closing(KafkaAdminClient(bootstrap_servers=bootstrap)) as admin:
        return set(admin.list_topics())


def _create(bootstrap: str, names: list[str]) -> None:
    with closing(KafkaAdminClient(bootstrap_servers=bootstrap)) as admin:
        admin.create_topics([NewTopic(name, 1, 1) for name in names], timeout_ms=30_000)


@pytest.mark.kafka
def test_the_topics_named_during_a_test_are_deleted_and_no_others(kafka_bootstrap: str) -> None:
    mine = kafka_scratch.scratch_suffix(kafka_bootstrap)
    named = [f"test.scratch.{mine}", f"test.scratch.{mine}.dead-letter"]
    someone_elses = f"test.scratch.{uuid.uuid4().hex[:10]}"  # another session's, say
    _create(kafka_bootstrap, [*named, someone_elses])
    try:
        assert sorted(kafka_scratch.delete_named(kafka_bootstrap)) == sorted(named)
        wait_for(lambda: not set(named) & _topics(kafka_bootstrap), 60, "the test's topics gone")
        assert someone_elses in _topics(kafka_bootstrap)
    finally:
        with closing(KafkaAdminClient(bootstrap_servers=kafka_bootstrap)) as admin:
            admin.delete_topics([someone_elses])


@pytest.mark.kafka
def test_a_fresh_session_deletes_scratch_topics_and_keeps_the_products(
    broker: PrivateBroker,
) -> None:
    left = ["test.changes.old1", "e2e.state.old2", "bench.changes.old3"]
    kept = "optout.changes.v1"
    _create(broker.bootstrap, [*left, kept])
    try:
        assert kafka_scratch.delete_leftovers(broker.bootstrap) == 3
        wait_for(lambda: not set(left) & _topics(broker.bootstrap), 60, "the leftovers gone")
        assert kept in _topics(broker.bootstrap)
    finally:
        kafka_scratch.close()


def test_a_broker_with_more_partitions_than_its_open_file_limit_allows_refuses_to_start(
    tmp_path: Path,
) -> None:
    env = {"OPTOUT_STATE_DIR": str(tmp_path), "OPTOUT_KAFKA_PORT": str(free_port_pair())}
    data = tmp_path / "kafka" / "data"
    for index in range(300):
        (data / f"test.changes.left-{index}").mkdir(parents=True)
    # 1,200 descriptors leave room for 176 partitions (1,024 are kept for everything else).
    script = (
        "import resource, sys\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (1200, 1200))\n"
        "from devservices import broker\n"
        "from devservices.process import ServiceError\n"
        "from devservices.settings import load\n"
        f"try:\n    broker.up(load({env!r}))\n"
        "except ServiceError as refused:\n    print(refused)\n    sys.exit(3)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 3, result.stdout + result.stderr
    assert "holds 300 partitions" in result.stdout and "room for 176" in result.stdout
    assert "ulimit -Hn" in result.stdout
    assert local_kafka.status(load(env)).state == "stopped"


# Run by a pytest of its own, on a local broker of its own: the first test kills that broker.
KILLS_THE_BROKER = """
import os
import signal
import time

from devservices import broker
from devservices.settings import load


def test_kills_the_broker(kafka_bootstrap):
    os.kill(broker.status(load()).pid, signal.SIGKILL)
    deadline = time.monotonic() + 60
    while broker.status(load()).state == "running" and time.monotonic() < deadline:
        time.sleep(0.1)


def test_would_time_out(kafka_bootstrap):
    raise AssertionError("ran after the broker died")
"""


def test_a_run_whose_shared_broker_dies_stops_at_once_with_the_brokers_log(
    tmp_path: Path,
) -> None:
    inner = tmp_path / "inner"
    inner.mkdir()
    (inner / "test_kills_the_broker.py").write_text(KILLS_THE_BROKER)
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"KAFKA_BOOTSTRAP_SERVERS", "OPTOUT_STATE_DIR", "OPTOUT_KAFKA_PORT"}
    }
    own = {"OPTOUT_STATE_DIR": str(tmp_path / "state"), "OPTOUT_KAFKA_PORT": str(free_port_pair())}
    # No Docker engine either: the inner run must lease a local broker of its own.
    env.update(own, DOCKER_HOST="unix:///nonexistent/docker.sock")
    try:
        result = subprocess.run(
            [sys.executable, "-m", "pytest", "-p", "tests.conftest", "-p", "no:cacheprovider",
             "--rootdir", str(inner), "-q", str(inner)],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
        )  # fmt: skip
    finally:
        local_kafka.down(load(own))
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "the shared Kafka broker (pid" in output, output
    assert "exited during test_kills_the_broker.py::test_kills_the_broker" in output, output
    assert f"lines of {tmp_path / 'state'}" in output, output  # the broker's own log
    assert "ran after the broker died" not in output, output
