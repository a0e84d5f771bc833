"""Session fixtures for the real services the integration tests talk to: Kafka and PostgreSQL.

Where each comes from, first match wins:
1. the environment: KAFKA_BOOTSTRAP_SERVERS / OPTOUT_TEST_DATABASE_URL;
2. testcontainers, when a Docker engine answers a ping;
3. the project's own local services (`devservices`, what `optout-sync services up`
   runs): reused when already up, otherwise started and stopped again at the end of the session.
A test that needs a service never skips: if it cannot be provided, the fixture fails with the reason
(for a local service, the tail of its log). The header and summary say which service was used.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

import devservices
from devservices import broker as local_kafka
from devservices import database as local_postgres
from devservices import settings
from devservices.process import log_tail
from tests import kafka_scratch

KAFKA_IMAGE = f"apache/kafka:{local_kafka.kafka_version()}"
POSTGRES_IMAGE = "postgres:15"
TEST_DATABASE = "optout_test"
READY_TIMEOUT_S = 120.0

# What each session fixture actually talked to, for the end-of-run summary.
_provided: dict[str, str] = {}
# The broker the session's Kafka tests share (bootstrap; pid and log where it is the local one).
_shared_kafka: dict[str, str] = {}


@cache
def _docker_answers() -> bool:
    """A Docker engine that answers a ping (a `docker` client alone is not enough)."""
    try:
        import docker

        client = docker.from_env(timeout=3)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:
        return False


def _local_settings() -> settings.ServiceSettings:
    return settings.load()


def _plan() -> list[str]:
    kafka_env = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    db_env = os.environ.get("OPTOUT_TEST_DATABASE_URL")
    docker = None if kafka_env and db_env else _docker_answers()
    local = _local_settings()
    if kafka_env:
        kafka = f"KAFKA_BOOTSTRAP_SERVERS={kafka_env}"
    elif docker:
        kafka = f"testcontainers {KAFKA_IMAGE}"
    else:
        kafka = (
            f"local broker {local_kafka.bootstrap(local)} "
            f"(Apache Kafka {local_kafka.kafka_version()} jars)"
        )
    if db_env:
        postgres = "OPTOUT_TEST_DATABASE_URL (from the environment)"
    elif docker:
        postgres = f"testcontainers {POSTGRES_IMAGE}"
    else:
        postgres = f"local PostgreSQL at {local_postgres.url(local, TEST_DATABASE)}"
    return [f"kafka: {kafka}", f"postgres: {postgres}"]


def pytest_report_header(config: pytest.Config) -> list[str]:
    return _plan()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Marks each test by the real services its fixtures reach, for the summary below."""
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        if "kafka_bootstrap" in names:
            item.add_marker(pytest.mark.kafka)
        if names & {"postgres_url", "fresh_postgres_url"}:
            item.add_marker(pytest.mark.postgres)


_SERVICE_MARKERS = {
    "kafka": "the real Kafka broker",
    "postgres": "the real PostgreSQL server",
    "sandbox": "the Salesforce sandbox (HTTPS, unmodified simple-salesforce)",
}


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _provided:
        return
    terminalreporter.section("real services used")
    for name, description in _provided.items():
        terminalreporter.write_line(f"{name}: {description}")
    passed = [r for r in terminalreporter.stats.get("passed", []) if r.when == "call"]
    for marker, what in _SERVICE_MARKERS.items():
        talked = [report.nodeid for report in passed if marker in report.keywords]
        if talked:
            terminalreporter.write_line(f"{len(talked)} tests passed against {what}, e.g.")
            for nodeid in talked[:4]:
                terminalreporter.write_line(f"    {nodeid}")


def _wait_for(what: str, ready: Callable[[], bool]) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while not ready():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not answer within {READY_TIMEOUT_S:.0f}s")
        time.sleep(0.5)


def _server_version(url: str) -> str:
    with psycopg.connect(url) as connection:
        row = connection.execute("SHOW server_version").fetchone()
    return f"PostgreSQL {row[0] if row else '?'}"


def _redacted(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@")))


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _kafka_container() -> Iterator[str]:
    from testcontainers.core.container import DockerContainer

    port = _free_port()
    container = DockerContainer(KAFKA_IMAGE).with_bind_ports(9092, port)
    host = container.get_docker_client().host()
    # KRaft single node; the advertised address must be the host-side one, known before start.
    container.with_envs(
        KAFKA_NODE_ID="1",
        KAFKA_PROCESS_ROLES="broker,controller",
        KAFKA_LISTENERS="PLAINTEXT://:9092,CONTROLLER://:9093",
        KAFKA_ADVERTISED_LISTENERS=f"PLAINTEXT://{host}:{port}",
        KAFKA_CONTROLLER_LISTENER_NAMES="CONTROLLER",
        KAFKA_LISTENER_SECURITY_PROTOCOL_MAP="CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        KAFKA_CONTROLLER_QUORUM_VOTERS="1@localhost:9093",
        KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR="1",
        KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR="1",
        KAFKA_TRANSACTION_STATE_LOG_MIN_ISR="1",
        KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS="0",
        KAFKA_NUM_PARTITIONS="4",
        KAFKA_AUTO_CREATE_TOPICS_ENABLE="true",
    )
    container.start()
    try:
        bootstrap = f"{host}:{port}"
        _wait_for(f"Kafka container {KAFKA_IMAGE}", lambda: local_kafka.broker_answers(bootstrap))
        _provided["kafka"] = f"testcontainers {KAFKA_IMAGE} at {bootstrap}"
        yield bootstrap
    finally:
        container.stop()


def _postgres_container() -> Iterator[str]:
    from testcontainers.postgres import PostgresContainer

    container = PostgresContainer(
        POSTGRES_IMAGE, username="postgres", password="postgres", dbname=TEST_DATABASE, driver=None
    )
    container.start()
    try:
        url = container.get_connection_url()
        _wait_for(f"PostgreSQL container {POSTGRES_IMAGE}", lambda: local_postgres.answers(url))
        _provided["postgres"] = f"testcontainers {_server_version(url)} at {_redacted(url)}"
        yield url
    finally:
        container.stop()


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """Bootstrap servers of a real Apache Kafka broker."""
    given = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    try:
        if given:
            _wait_for(
                f"Kafka at KAFKA_BOOTSTRAP_SERVERS={given}",
                lambda: local_kafka.broker_answers(given),
            )
            _provided["kafka"] = f"KAFKA_BOOTSTRAP_SERVERS={given}"
            _shared_kafka["bootstrap"] = given
            yield given
        elif _docker_answers():
            for bootstrap in _kafka_container():
                _shared_kafka["bootstrap"] = bootstrap
                yield bootstrap
        else:
            yield from _local_kafka()
    finally:
        _shared_kafka.clear()
        kafka_scratch.close()


def _local_kafka() -> Iterator[str]:
    with devservices.lease("kafka", _local_settings()) as broker:
        how = "started for this session" if broker.started else f"already running, pid {broker.pid}"
        if broker.started:
            # Nobody else used it a moment ago: what scratch topics it holds, earlier runs left.
            how += f", {kafka_scratch.delete_leftovers(broker.endpoint)} old scratch topics deleted"
        _provided["kafka"] = (
            f"local broker {broker.endpoint} ({broker.version} jars, {how}; log {broker.log_path})"
        )
        _shared_kafka.update(bootstrap=broker.endpoint, pid=str(broker.pid), log=broker.log_path)
        yield broker.endpoint


@pytest.fixture(autouse=True)
def _shared_broker_tidy(request: pytest.FixtureRequest) -> Iterator[None]:
    """After a test that used the shared broker: the broker still runs (else the run stops here,
    with its log, rather than time out test after test), and the topics the test made are gone."""
    yield
    if "kafka_bootstrap" not in request.fixturenames:
        kafka_scratch.delete_named(None)
        return
    if "log" in _shared_kafka and devservices.status("kafka", _local_settings()).state != "running":
        pytest.exit(
            f"the shared Kafka broker (pid {_shared_kafka['pid']}) exited during "
            f"{request.node.nodeid}\n{log_tail(Path(_shared_kafka['log']), lines=60)}",
            returncode=1,
        )
    kafka_scratch.delete_named(_shared_kafka.get("bootstrap"))


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """URL of a real PostgreSQL database for tests (shared by the session; see fresh_postgres_url)."""
    given = os.environ.get("OPTOUT_TEST_DATABASE_URL")
    if given:
        _wait_for("PostgreSQL at OPTOUT_TEST_DATABASE_URL", lambda: local_postgres.answers(given))
        _provided["postgres"] = (
            f"OPTOUT_TEST_DATABASE_URL {_server_version(given)} at {_redacted(given)}"
        )
        yield given
    elif _docker_answers():
        yield from _postgres_container()
    else:
        local = _local_settings()
        with devservices.lease("postgres", local) as server:
            url = local_postgres.url(local, TEST_DATABASE)
            how = (
                "started for this session"
                if server.started
                else f"already running, pid {server.pid}"
            )
            _provided["postgres"] = (
                f"local {_server_version(url)} at {url} ({how}; log {server.log_path})"
            )
            yield url


@pytest.fixture
def fresh_postgres_url(postgres_url: str) -> Iterator[str]:
    """URL of a new, empty database on the test server, dropped after the test."""
    name = f"t_{uuid.uuid4().hex[:16]}"
    url = local_postgres.create_database(postgres_url, name)
    try:
        yield url
    finally:
        local_postgres.drop_database(postgres_url, name)


@pytest.fixture(autouse=True)
def _clean_org(request: pytest.FixtureRequest) -> Iterator[None]:
    """Faults and API usage of a session's sandbox org never leak from one test into the next."""
    yield
    if "sandbox" in request.fixturenames:
        running = request.getfixturevalue("sandbox")
        running.clear_faults()
        running.set_api_usage(0, running.config.daily_api_limit)
