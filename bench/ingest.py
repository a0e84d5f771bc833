"""Ingest throughput: events/s stored by one ingest process, on SQLite and on PostgreSQL, and the
ratio to a plain kafka-python consume of the same topic in the same run.

    ./run bench ingest [--messages 100000] [--persons 80000]

Uses KAFKA_BOOTSTRAP_SERVERS / OPTOUT_BENCH_DATABASE_URL (a PostgreSQL server URL) when given,
else the project's local services (started if needed).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

from adapters import kafka, local_services
from adapters.inbound import Actor, ChangeV1, PersonRef, encode, kafka_key
from adapters.local_services import postgres as local_postgres
from adapters.settings import Settings, load
from consumers import bootstrap
from consumers.ingest import Ingest


def settings_for(database_url: str, topic: str, state_dir: Path) -> Settings:
    env = {
        **os.environ,
        "OPTOUT_DATABASE_URL": database_url,
        "OPTOUT_TOPIC_INBOUND": topic,
        "OPTOUT_CONSUMER_GROUP": f"bench-{uuid.uuid4().hex[:8]}",
        "OPTOUT_STATE_DIR": str(state_dir),
    }
    return load(env)


def fill(config: Settings, messages: int, persons: int) -> None:
    sender = kafka.producer(config, linger_ms=20)
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
    consumer = kafka.consumer(
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
    bootstrap.prepare(config)
    worker = Ingest(config, bootstrap.open_store(config, writer=True))
    started: list[float] = []

    def done(stats: object) -> bool:
        if not started and worker.stats.polled:
            started.append(time.perf_counter() - 0.0)
        return worker.stats.polled >= messages

    # Time from the first stored batch: group join is start-up, not throughput.
    begin = time.perf_counter()
    stats = worker.run(until=done)
    end = time.perf_counter()
    assert stats.recorded == messages, stats
    first = started[0] if started else begin
    return messages / (end - first)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--persons", type=int, default=80_000)
    args = parser.parse_args()

    state = Path(tempfile.mkdtemp(prefix="optout-bench-"))
    base = load()
    bootstrap.ensure_local_kafka(base)
    server_url = os.environ.get("OPTOUT_BENCH_DATABASE_URL")
    if not server_url:
        local_services.up("postgres", base)
        server_url = local_postgres.url(base, "optout")
    pg_database = f"bench_{uuid.uuid4().hex[:8]}"
    pg_url = local_postgres.create_database(server_url, pg_database)

    topic = f"bench.changes.{uuid.uuid4().hex[:8]}"
    seed = settings_for(f"sqlite:///{state / 'seed.sqlite'}", topic, state)
    kafka.ensure_topics(seed)
    print(f"producing {args.messages:,} changes for {args.persons:,} persons to {topic} ...")
    fill(seed, args.messages, args.persons)

    plain = plain_consume(seed, args.messages)
    sqlite = ingest(
        settings_for(f"sqlite:///{state / 'events.sqlite'}", topic, state), args.messages
    )
    postgres = ingest(settings_for(pg_url, topic, state), args.messages)
    local_postgres.drop_database(server_url, pg_database)

    print(f"\n{'':28}{'events/s':>12}{'vs plain':>10}{'target':>10}")
    print(f"{'plain kafka-python consume':28}{plain:12,.0f}{1:10.2f}")
    for name, rate, target in (
        ("ingest, SQLite", sqlite, 10_000),
        ("ingest, PostgreSQL", postgres, 5_000),
    ):
        verdict = "ok" if rate >= target and rate / plain >= 0.25 else "MISSED"
        print(f"{name:28}{rate:12,.0f}{rate / plain:10.2f}{target:>10,} {verdict}")


if __name__ == "__main__":
    main()
