"""Ingest throughput: events/s stored by one ingest process, on SQLite and on PostgreSQL, and the
ratio to a plain kafka-python consume of the same topic, each run beside its own plain consume,
every side timed over the same window of messages (after a warm-up tenth); then one instrumented
run that prints each stage's µs per change.

    ./run bench ingest [--messages 60000] [--persons 50000] [--runs 3] [--processes 2]

Uses KAFKA_BOOTSTRAP_SERVERS / OPTOUT_BENCH_DATABASE_URL (a PostgreSQL server URL) when given,
else the project's local services (started if needed).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path

from stages import STAGES, instrumented

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


class Window:
    """Progress samples (time, messages done) of one side; its rate is taken over the same range
    of messages on every side: from the first sample at or past `warm` messages to the last."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, int]] = []

    def note(self, done: int) -> None:
        self.samples.append((time.perf_counter(), done))

    def rate(self, warm: int) -> float:
        start = next((t, n) for t, n in self.samples if n >= warm)
        end = self.samples[-1]
        return (end[1] - start[1]) / (end[0] - start[0])


def warm_up_count(messages: int) -> int:
    """Messages each side handles before its window opens: group join, JIT, first fetches."""
    return max(1_000, messages // 10)


def plain_consume(config: Settings, messages: int) -> float:
    """The baseline: a consumer-group member reading the same topic, doing nothing with it."""
    consumer = kafka_clients.consumer(
        config, [config.topic_inbound], group_id=f"bench-plain-{uuid.uuid4().hex[:8]}"
    )
    window, seen = Window(), 0
    while seen < messages:
        for records in consumer.poll(timeout_ms=500).values():
            seen += len(records)
        window.note(seen)
    consumer.close()
    return window.rate(warm_up_count(messages))


def ingest(
    config: Settings, messages: int, stages: bool = False
) -> tuple[float, dict[str, float] | None]:
    """One in-process ingest worker (events/s over the window), and with `stages` its µs per
    change in each stage (then the rate is not comparable: the timers cost)."""
    bootstrap.prepare(config)
    worker = bootstrap.ingest(config)
    window = Window()
    warm = warm_up_count(messages)
    recorder = type(worker.store.recorder)
    with contextlib.ExitStack() as stack:
        timers = stack.enter_context(instrumented(recorder)) if stages else None
        opened: list[tuple[int, int]] = []  # (ns, stored) when the window opened

        def done(stats: IngestStats) -> bool:
            window.note(stats.polled)
            if timers is not None and not opened and stats.polled >= warm:
                timers.reset()
                opened.append((time.perf_counter_ns(), stats.polled))
            return stats.polled >= messages

        stats = worker.run(until=done)
        wall_ns = time.perf_counter_ns()
    assert stats.recorded == messages, stats
    if timers is None:
        return window.rate(warm), None
    return window.rate(warm), timers.per_change(wall_ns - opened[0][0], messages - opened[0][1])


def ingest_processes(config: Settings, messages: int, processes: int) -> float:
    """N `optout-sync ingest` processes in one consumer group; events/s over the window, read
    from the store's positions."""
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
    window = Window()
    try:
        stored = 0
        while stored < messages:
            stored = sum(position + 1 for position in store.positions(names).values())
            window.note(stored)
            time.sleep(0.02)  # sampling the store's progress
    finally:
        for worker in workers:
            worker.send_signal(signal.SIGTERM)
            worker.wait(timeout=60)
        store.close()
    return window.rate(warm_up_count(messages))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=60_000)
    parser.add_argument("--persons", type=int, default=50_000)
    parser.add_argument("--runs", type=int, default=3, help="timed runs; medians are reported")
    parser.add_argument(
        "--processes",
        type=int,
        default=0,
        help="also measure N ingest processes in one group against one, on PostgreSQL",
    )
    parser.add_argument("--no-stages", action="store_true", help="skip the instrumented run")
    args = parser.parse_args()

    state = Path(tempfile.mkdtemp(prefix="optout-bench-"))
    bootstrap.ensure_local_kafka()
    server_url = os.environ.get("OPTOUT_BENCH_DATABASE_URL")
    if not server_url:
        services = devservices.settings.load()
        devservices.up("postgres", services)
        server_url = local_postgres.url(services, "optout")

    databases: list[str] = []

    def store(kind: str) -> Settings:
        if kind == "sqlite":
            url = f"sqlite:///{state / f'events-{uuid.uuid4().hex[:8]}.sqlite'}"
        else:
            name = f"bench_{uuid.uuid4().hex[:8]}"
            databases.append(name)
            url = local_postgres.create_database(server_url, name)
        return settings_for(url, topic, state)

    topic = f"bench.changes.{uuid.uuid4().hex[:8]}"
    seed = settings_for(f"sqlite:///{state / 'seed.sqlite'}", topic, state)
    kafka_clients.ensure_topics(seed)
    try:
        rates, stages = measure(args, seed, store)
    finally:
        # The broker keeps a file open for every partition it holds: leave none behind.
        with closing(kafka_clients.admin(seed)) as admin:
            admin.delete_topics([t for t in admin.list_topics() if t.startswith(topic)])
        for name in databases:
            local_postgres.drop_database(server_url, name)
    report(rates, stages, args.processes, args.runs)


def measure(
    args: argparse.Namespace, seed: Settings, store: Callable[[str], Settings]
) -> tuple[dict[str, list[float]], dict[str, dict[str, float] | None]]:
    """The timed runs, each beside its plain consume, and the instrumented run's stages."""
    print(
        f"producing {args.messages:,} changes for {args.persons:,} persons "
        f"to {seed.topic_inbound} ..."
    )
    fill(seed, args.messages, args.persons)
    rates: dict[str, list[float]] = {}
    for run in range(1, args.runs + 1):
        # Unmeasured, before each run: a freshly started broker is still JIT-compiling, and the
        # first consume after an ingest in this process ran at 40-80% of the next one's rate
        # (session 6), which made later runs' ratios look half again as good.
        plain_consume(seed, args.messages)
        measured = {"plain kafka-python consume": plain_consume(seed, args.messages)}
        measured["ingest, SQLite"] = ingest(store("sqlite"), args.messages)[0]
        measured["ingest, PostgreSQL"] = ingest(store("postgres"), args.messages)[0]
        if args.processes:
            for n in (1, args.processes):
                name = f"{n} process{'es' if n > 1 else ''}, PostgreSQL"
                measured[name] = ingest_processes(store("postgres"), args.messages, n)
        plain = measured["plain kafka-python consume"]
        print(
            f"run {run}: "
            + "; ".join(
                f"{name} {rate:,.0f}/s ({rate / plain:.3f})" for name, rate in measured.items()
            )
        )
        for name, rate in measured.items():
            rates.setdefault(name, []).append(rate)
    stages = {} if args.no_stages else {
        "SQLite": ingest(store("sqlite"), args.messages, stages=True)[1],
        "PostgreSQL": ingest(store("postgres"), args.messages, stages=True)[1],
    }  # fmt: skip
    return rates, stages


def report(
    rates: dict[str, list[float]],
    stages: dict[str, dict[str, float] | None],
    processes: int,
    runs: int,
) -> None:
    """Medians of the runs' rates and of each run's ratio to its own plain consume."""
    plains = rates["plain kafka-python consume"]
    print(f"\nmedians of {runs} runs, each over the same window of messages")
    print(f"{'':30}{'events/s':>10}{'vs plain':>10}   target")
    for name, values in rates.items():
        ratio = statistics.median(v / p for v, p in zip(values, plains, strict=True))
        if name.startswith("ingest"):
            target = f">= 0.15: {'met' if ratio >= 0.15 else 'MISSED'} (stretch 0.2)"
        else:
            target = ""
        print(f"{name:30}{statistics.median(values):10,.0f}{ratio:10.3f}   {target}")
    if processes:
        one, many = rates["1 process, PostgreSQL"], rates[f"{processes} processes, PostgreSQL"]
        scale = statistics.median(m / o for m, o in zip(many, one, strict=True))
        verdict = f"target >= 1.6: {'met' if scale >= 1.6 else 'MISSED'}" if processes == 2 else ""
        print(f"{processes} processes / 1 process, PostgreSQL: {scale:.2f}x   {verdict}")
    if stages:
        print("\nµs per change by stage (an instrumented run; timers add ~1 µs per call)")
        print(f"{'stage':10}" + "".join(f"{name:>12}" for name in stages))
        for stage in STAGES:
            cells = "".join(f"{(s or {}).get(stage, 0):12.1f}" for s in stages.values())
            print(f"{stage:10}{cells}   {STAGES[stage]}")
        totals = "".join(
            f"{sum(v for k, v in (s or {}).items() if k != 'gc'):12.1f}" for s in stages.values()
        )
        print(f"{'total':10}{totals}")


if __name__ == "__main__":
    main()
