"""Ingest throughput: events/s stored by one ingest process, on SQLite and on PostgreSQL, and the
ratio to a plain kafka-python consume of the same topic in the same run.

    ./run bench ingest [--messages 100000] [--persons 80000]

Uses KAFKA_BOOTSTRAP_SERVERS / OPTOUT_BENCH_DATABASE_URL (a PostgreSQL server URL) when given,
else the project's local services (started if needed).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import devservices
from adapters import kafka_clients
from adapters.inbound import Actor, ChangeV1, PersonRef, encode, kafka_key
from adapters.settings import Settings, load
from consumers import bootstrap
from consumers.ingest import IngestStats
from devservices import database as local_postgres

PARTITIONS = 4


def settings_for(database_url: str, topic: str, state_dir: Path) -> Settings:
    env = {
        **os.environ,
        "OPTOUT_DATABASE_URL": database_url,
        "OPTOUT_TOPIC_INBOUND": topic,
        "OPTOUT_CONSUMER_GROUP": f"bench-{uuid.uuid4().hex[:8]}",
        "OPTOUT_STATE_DIR": str(state_dir),
        "OPTOUT_TOPIC_PARTITIONS": str(PARTITIONS),
    }
    return load(env)


def fill(config: Settings, messages: int, persons: int) -> None:
    sender = kafka_clients.producer(config, linger_ms=20)
    now = datetime.now(UTC)
    for i in range(messages):
        change = ChangeV1(
            event_id=uuid.uuid4(),
            schema_version=1,
            type="unsubscribed",
            person=PersonRef(person_id=f"bench-{i % persons}", email=f"p{i % persons}@example.com"),
            source="sales" if i % 2 else "marketing",
            actor=Actor(kind="recipient"),
            channel="email_link",
            occurred_at=now,
        )
        sender.send(config.topic_inbound, key=kafka_key(change), value=encode(change))
    sender.flush(timeout=120)
    sender.close()


def plain_consume(config: Settings, messages: int) -> float:
    """The baseline: a consumer-group member reading the same topic, doing nothing with it."""
    consumer = kafka_clients.consumer(
        config, [config.topic_inbound], group_id=f"bench-plain-{uuid.uuid4().hex[:8]}"
    )
    seen, started = 0, None
    while seen < messages:
        for records in consumer.poll(timeout_ms=500).values():
            started = started or time.perf_counter()
            seen += len(records)
    elapsed = time.perf_counter() - (started or time.perf_counter())
    consumer.close()
    return messages / elapsed


def ingest(config: Settings, messages: int) -> float:
    """One in-process ingest worker; events/s from its first stored batch (group join is
    start-up, not throughput) to the last."""
    bootstrap.prepare(config)
    worker = bootstrap.ingest(config)
    first_stored: list[float] = []

    def done(stats: IngestStats) -> bool:
        if stats.polled and not first_stored:
            first_stored.append(time.perf_counter())
        return stats.polled >= messages

    stats = worker.run(until=done)
    end = time.perf_counter()
    assert stats.recorded == messages, stats
    return messages / (end - first_stored[0])


def ingest_processes(config: Settings, messages: int, processes: int) -> float:
    """N `optout-sync ingest` processes in one consumer group; events/s from the first stored
    change to the last, read from the store's positions."""
    bootstrap.prepare(config)
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": config.kafka_bootstrap_servers,
        "OPTOUT_DATABASE_URL": str(config.database_url),
        "OPTOUT_TOPIC_INBOUND": config.topic_inbound,
        "OPTOUT_CONSUMER_GROUP": config.consumer_group,
        "OPTOUT_STATE_DIR": str(config.state_dir),
    }
    command = [sys.executable, "-m", "consumers", "ingest", "--no-prepare"]
    workers = [
        subprocess.Popen(command, env=env, stderr=subprocess.DEVNULL) for _ in range(processes)
    ]
    store = bootstrap.open_store(config)
    names = [f"{config.topic_inbound}:{p}" for p in range(PARTITIONS)]
    first = None
    try:
        while True:
            stored = sum(position + 1 for position in store.positions(names).values())
            now = time.perf_counter()
            if stored and first is None:
                first = now
            if stored >= messages:
                break
            time.sleep(0.02)  # sampling the store's progress
    finally:
        for worker in workers:
            worker.send_signal(signal.SIGTERM)
            worker.wait(timeout=60)
        store.close()
    assert first is not None
    return messages / (now - first)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--persons", type=int, default=80_000)
    parser.add_argument(
        "--processes",
        type=int,
        default=0,
        help="also measure N ingest processes in one group, on PostgreSQL (scale-out)",
    )
    args = parser.parse_args()

    state = Path(tempfile.mkdtemp(prefix="optout-bench-"))
    bootstrap.ensure_local_kafka()
    server_url = os.environ.get("OPTOUT_BENCH_DATABASE_URL")
    if not server_url:
        services = devservices.settings.load()
        devservices.up("postgres", services)
        server_url = local_postgres.url(services, "optout")

    def fresh_postgres() -> str:
        name = f"bench_{uuid.uuid4().hex[:8]}"
        databases.append(name)
        return local_postgres.create_database(server_url, name)

    databases: list[str] = []
    topic = f"bench.changes.{uuid.uuid4().hex[:8]}"
    seed = settings_for(f"sqlite:///{state / 'seed.sqlite'}", topic, state)
    kafka_clients.ensure_topics(seed)
    print(f"producing {args.messages:,} changes for {args.persons:,} persons to {topic} ...")
    fill(seed, args.messages, args.persons)

    plain_consume(seed, args.messages)  # warm-up: a freshly started broker is still JIT-compiling
    plain = plain_consume(seed, args.messages)
    rows = [
        ("ingest, SQLite", ingest(
            settings_for(f"sqlite:///{state / 'events.sqlite'}", topic, state), args.messages
        ), 10_000),
        ("ingest, PostgreSQL", ingest(
            settings_for(fresh_postgres(), topic, state), args.messages
        ), 5_000),
    ]  # fmt: skip
    if args.processes:
        rate = ingest_processes(
            settings_for(fresh_postgres(), topic, state), args.messages, args.processes
        )
        rows.append((f"{args.processes} processes, PostgreSQL", rate, 0))
    for name in databases:
        local_postgres.drop_database(server_url, name)

    print(f"\n{'':30}{'events/s':>10}{'vs plain':>10}   targets (events/s; ratio 0.25)")
    print(f"{'plain kafka-python consume':30}{plain:10,.0f}{1:10.2f}")
    for name, rate, target in rows:
        ratio = rate / plain
        verdict = (
            f"{target:,}: {'met' if rate >= target else 'MISSED'}; "
            f"0.25: {'met' if ratio >= 0.25 else 'MISSED'}"
            if target
            else "(scale-out, no target)"
        )
        print(f"{name:30}{rate:10,.0f}{ratio:10.2f}   {verdict}")


if __name__ == "__main__":
    main()
