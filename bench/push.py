"""The live push, end to end: produce→accepted latency, the API calls a burst costs, and the calls
an idle pusher makes.

    ./run bench push [--rates 100,1000] [--seconds 20] [--burst 10000] [--idle 60]
                     [--latency-ms 50] [--store sqlite|postgres] [--json]

One `optout-sync ingest` and one `optout-sync push` process, the sandbox org in a process of its
own (`optout-sync sandbox`, with its `latency` fault on every API call), the project's local
Kafka broker (or KAFKA_BOOTSTRAP_SERVERS) and a fresh SQLite store (or PostgreSQL). Each change
is an unsubscribe of a person of its own, linked to a Contact of its own, so every change is owed
one push.

1. For each rate: changes produced at that rate for --seconds; for each, produce→accepted (when
   Salesforce's answer reached the pusher, the history's proof) and its split: ingest (produced →
   stored), wait for the pusher (stored → the call that wrote it was sent), Salesforce (that call,
   as the sandbox timed it). Target: p99 ≤ 1 s at 100/s.
2. A burst of --burst changes produced at once: sObject Collections calls made for it, beside the
   naive one call per change. Target: ≤ 55 for 10,000 (the floor at 200 a call is 50).
3. --idle seconds with nothing to do and the pusher running: API calls made. Target: 0.

Exits non-zero when a target is missed; --json prints the figures as one JSON object.
"""

from __future__ import annotations

import argparse
import bisect
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import requests
from eventsourcing.utils import get_topic
from simple_salesforce import Salesforce

import devservices
from adapters import kafka_clients
from adapters.inbound import Actor, ChangeV1, PersonRef, encode, kafka_key
from adapters.settings import Settings, load
from consumers import bootstrap
from devservices import database as local_postgres
from domain.identity import aggregate_id, person_key
from domain.person import Person

PUSH_CALLS = "composite/sobjects"
BATCH = 200
TARGET_P99_S = 1.0
TARGET_BURST_CALLS = 55
WARM_UP = 20  # changes pushed before anything is measured
REPO = Path(__file__).resolve().parents[1]


@dataclass
class Org:
    process: subprocess.Popen[str]
    env: dict[str, str]
    admin: requests.Session
    url: str

    def calls(self, path: str = "", kind: str = "api") -> list[dict[str, Any]]:
        found = self.admin.get(f"{self.url}/__admin/calls", params={"kind": kind, "path": path})
        found.raise_for_status()
        return list(found.json()["calls"])


@contextmanager
def sandbox(contacts: int, state_dir: Path, latency_ms: int) -> Iterator[Org]:
    command = ["optout-sync", "sandbox", "--port", "0", "--json", "--enable-admin"]
    command += ["--generate", str(contacts), "--daily-api-limit", "1000000"]
    env = {**os.environ, "OPTOUT_STATE_DIR": str(state_dir / "sandbox")}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()  # printed once the socket listens
        if not line:
            raise SystemExit("the sandbox did not start")
        settings = json.loads(line)
        admin = requests.Session()
        admin.verify = settings["SALESFORCE_CA_BUNDLE"]
        admin.trust_env = False  # else REQUESTS_CA_BUNDLE overrides verify
        host = settings["SALESFORCE_DOMAIN"].split("/")[0]
        org = Org(process, settings, admin, f"https://{host}")
        if latency_ms:
            spec = {"kind": "latency", "latency_ms": latency_ms, "path": "/services/data/"}
            admin.post(f"{org.url}/__admin/faults", json=spec).raise_for_status()
        yield org
    finally:
        process.terminate()
        process.wait(timeout=30)


def contact_ids(org: Org) -> list[str]:
    session = requests.Session()
    session.verify = org.env["SALESFORCE_CA_BUNDLE"]
    session.trust_env = False
    sf = Salesforce(
        username=org.env["SALESFORCE_USERNAME"],
        password=org.env["SALESFORCE_PASSWORD"],
        security_token=org.env["SALESFORCE_SECURITY_TOKEN"],
        domain=org.env["SALESFORCE_DOMAIN"],
        session=session,
    )
    return [row["Id"] for row in sf.query_all("SELECT Id FROM Contact ORDER BY Id")["records"]]


def settings_for(database_url: str, state_dir: Path, org: Org) -> Settings:
    env = {
        **os.environ,
        **org.env,
        "OPTOUT_DATABASE_URL": database_url,
        "OPTOUT_STATE_DIR": str(state_dir),
        "OPTOUT_TOPIC_INBOUND": f"bench.push.{uuid.uuid4().hex[:8]}",
        "OPTOUT_CONSUMER_GROUP": f"bench-push-{uuid.uuid4().hex[:8]}",
        "OPTOUT_SALESFORCE_DAILY_BUDGET": "100%",
    }
    return load(env)


def env_of(config: Settings, org: Org) -> dict[str, str]:
    return {
        **os.environ,
        **org.env,
        "KAFKA_BOOTSTRAP_SERVERS": config.kafka_bootstrap_servers,
        "OPTOUT_DATABASE_URL": config.database_url,
        "OPTOUT_STATE_DIR": str(config.state_dir),
        "OPTOUT_TOPIC_INBOUND": config.topic_inbound,
        "OPTOUT_CONSUMER_GROUP": config.consumer_group,
        "OPTOUT_SALESFORCE_DAILY_BUDGET": "100%",
    }


def change(person_id: str, record: str) -> ChangeV1:
    return ChangeV1(
        event_id=uuid.uuid4(),
        schema_version=1,
        type="unsubscribed",
        person=PersonRef(person_id=person_id, salesforce_id=record),
        source="marketing",
        actor=Actor(kind="recipient"),
        channel="email_link",
        occurred_at=datetime.now(UTC),
    )


def produce(
    config: Settings, pairs: list[tuple[str, str]], rate: float | None
) -> dict[UUID, float]:
    """Sends one change per (person id, record), at `rate` a second (None: at once); returns when
    each was sent (wall clock), by the person's aggregate id."""
    sender = kafka_clients.producer(config, linger_ms=0 if rate else 20)
    sent: dict[UUID, float] = {}
    started = time.perf_counter()
    for n, (person_id, record) in enumerate(pairs):
        if rate:
            ahead = started + n / rate - time.perf_counter()
            if ahead > 0:
                time.sleep(ahead)  # pacing the producer
        message = change(person_id, record)
        sent[aggregate_id(person_key(person_id))] = time.time()
        sender.send(config.topic_inbound, key=kafka_key(message), value=encode(message))
    sender.flush(timeout=120)
    sender.close()
    return sent


def read_times(config: Settings, ids: set[UUID]) -> tuple[dict[UUID, float], dict[UUID, float]]:
    """When each person's unsubscribe was stored, and when Salesforce accepted it."""
    store = bootstrap.open_store(config)
    stored: dict[UUID, float] = {}
    accepted: dict[UUID, float] = {}
    unsubscribed = (Person.Unsubscribed, Person.FirstUnsubscribed)  # a new person's: the latter
    topics = [get_topic(kind) for kind in (*unsubscribed, Person.OptOutAccepted)]
    try:
        start = 0
        while True:
            page = store.recorder.select_notifications(
                start, 5000, topics=topics, inclusive_of_start=False
            )
            for notification in page:
                if notification.originator_id not in ids:
                    continue
                event = store.mapper.to_domain_event(notification)
                if isinstance(event, Person.OptOutAccepted):
                    accepted[notification.originator_id] = event.accepted_at.timestamp()
                else:
                    stored[notification.originator_id] = event.timestamp.timestamp()
            if len(page) < 5000:
                return stored, accepted
            start = page[-1].id
    finally:
        store.close()


def wait_accepted(config: Settings, ids: set[UUID], bound_s: float) -> dict[UUID, float]:
    deadline = time.monotonic() + bound_s
    while True:
        _, accepted = read_times(config, ids)
        if len(accepted) == len(ids):
            return accepted
        if time.monotonic() > deadline:
            raise SystemExit(f"only {len(accepted)} of {len(ids)} accepted after {bound_s:.0f} s")
        time.sleep(1.0)  # sampling the store's progress


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def latency_run(
    config: Settings, org: Org, pairs: list[tuple[str, str]], rate: float
) -> dict[str, Any]:
    calls_before = len(org.calls(PUSH_CALLS))
    sent = produce(config, pairs, rate)
    ids = set(sent)
    accepted = wait_accepted(config, ids, 300)
    stored, _ = read_times(config, ids)
    push_calls = org.calls(PUSH_CALLS)[calls_before:]
    # Each acceptance's call: the latest push call the sandbox answered before the pusher had
    # the answer (one machine, one clock); the call's duration is Salesforce's share.
    calls = sorted((c["at"], c["duration_ms"] / 1000) for c in push_calls)
    ends = [end for end, _ in calls]
    total, ingest, wait, salesforce = [], [], [], []
    for person, at in accepted.items():
        call_s = calls[max(0, bisect.bisect_right(ends, at) - 1)][1] if calls else 0.0
        total.append(at - sent[person])
        ingest.append(stored[person] - sent[person])
        salesforce.append(call_s)
        wait.append(max(0.0, at - stored[person] - call_s))
    return {
        "rate": rate,
        "changes": len(pairs),
        "p50_s": percentile(total, 50),
        "p99_s": percentile(total, 99),
        "ingest_p50_s": statistics.median(ingest),
        "wait_p50_s": statistics.median(wait),
        "salesforce_p50_s": statistics.median(salesforce),
        "ingest_p99_s": percentile(ingest, 99),
        "wait_p99_s": percentile(wait, 99),
        "salesforce_p99_s": percentile(salesforce, 99),
        "push_calls": len(push_calls),
    }


def burst_run(config: Settings, org: Org, pairs: list[tuple[str, str]]) -> dict[str, Any]:
    calls_before = len(org.calls(PUSH_CALLS))
    started = time.monotonic()
    sent = produce(config, pairs, None)
    wait_accepted(config, set(sent), 600)
    calls = len(org.calls(PUSH_CALLS)) - calls_before
    return {
        "changes": len(pairs),
        "push_calls": calls,
        "naive_calls": len(pairs),
        "floor": -(-len(pairs) // BATCH),
        "seconds": time.monotonic() - started,
    }


def idle_run(org: Org, seconds: float) -> dict[str, Any]:
    api, logins = len(org.calls()), len(org.calls(kind="login"))
    time.sleep(seconds)  # the idle period measured
    return {
        "seconds": seconds,
        "api_calls": len(org.calls()) - api,
        "logins": len(org.calls(kind="login")) - logins,
    }


@contextmanager
def store_url(store: str, state: Path) -> Iterator[str]:
    """A fresh store for the run; a PostgreSQL database is dropped after it."""
    if store == "sqlite":
        yield f"sqlite:///{state / 'events.sqlite'}"
        return
    server_url = os.environ.get("OPTOUT_BENCH_DATABASE_URL")
    if not server_url:
        services = devservices.settings.load()
        devservices.up("postgres", services)
        server_url = local_postgres.url(services, "optout")
    name = f"bench_push_{uuid.uuid4().hex[:8]}"
    try:
        yield local_postgres.create_database(server_url, name)
    finally:
        local_postgres.drop_database(server_url, name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rates", default="100,1000", help="changes per second, comma-separated")
    parser.add_argument("--seconds", type=float, default=20.0, help="per rate")
    parser.add_argument("--burst", type=int, default=10_000)
    parser.add_argument("--idle", type=float, default=60.0)
    parser.add_argument("--latency-ms", type=int, default=50, help="the sandbox's latency fault")
    parser.add_argument(
        "--store",
        choices=["sqlite", "postgres"],
        default="sqlite",
        help="a fresh SQLite file, or a fresh database on OPTOUT_BENCH_DATABASE_URL's server "
        "(default: the project's local PostgreSQL)",
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rates = [float(rate) for rate in args.rates.split(",") if rate]

    state = Path(tempfile.mkdtemp(prefix="optout-bench-push-"))
    bootstrap.ensure_local_kafka()
    needed = sum(int(rate * args.seconds) for rate in rates) + args.burst + WARM_UP
    with sandbox(needed, state, args.latency_ms) as org, store_url(args.store, state) as url:
        records = contact_ids(org)
        config = settings_for(url, state, org)
        bootstrap.prepare(config)
        env = env_of(config, org)
        logs = [(state / name).open("w") for name in ("ingest.log", "push.log")]
        workers = [
            subprocess.Popen(
                [sys.executable, "-m", "consumers", *verb],
                cwd=REPO,
                env=env,
                stdout=log,
                stderr=log,
            )
            for verb, log in zip((["ingest", "--no-prepare"], ["push"]), logs, strict=True)
        ]
        try:
            pairs = [(f"bench-{n}", record) for n, record in enumerate(records)]
            # Warm-up: the ingest has joined its group and the pusher is pushing.
            warm, pairs = pairs[:WARM_UP], pairs[WARM_UP:]
            wait_accepted(config, set(produce(config, warm, None)), 300)
            latency = []
            for rate in rates:
                count = int(rate * args.seconds)
                latency.append(latency_run(config, org, pairs[:count], rate))
                pairs = pairs[count:]
            burst = burst_run(config, org, pairs[: args.burst])
            idle = idle_run(org, args.idle)
        finally:
            for worker in workers:
                worker.terminate()
                worker.wait(timeout=60)
            for log in logs:
                log.close()
    report(args, latency, burst, idle)
    missed = [row for row in latency if row["rate"] == 100 and row["p99_s"] > TARGET_P99_S]
    if missed or burst["push_calls"] > TARGET_BURST_CALLS or idle["api_calls"]:
        raise SystemExit(1)


def report(
    args: argparse.Namespace,
    latency: list[dict[str, Any]],
    burst: dict[str, Any],
    idle: dict[str, Any],
) -> None:
    if args.json:
        print(json.dumps({"latency": latency, "burst": burst, "idle": idle}))
        return
    print(
        f"\nproduce → accepted on {args.store}, sandbox latency {args.latency_ms} ms a call "
        "(seconds)"
    )
    print(
        f"{'rate/s':>8}{'changes':>9}{'p50':>8}{'p99':>8}   split p50 (p99): ingest, wait, Salesforce"
    )
    for row in latency:
        verdict = ""
        if row["rate"] == 100:
            verdict = f"   target p99 ≤ {TARGET_P99_S:.0f} s: "
            verdict += "met" if row["p99_s"] <= TARGET_P99_S else "MISSED"
        print(
            f"{row['rate']:8.0f}{row['changes']:9,}{row['p50_s']:8.3f}{row['p99_s']:8.3f}   "
            f"{row['ingest_p50_s']:.3f} ({row['ingest_p99_s']:.3f}), "
            f"{row['wait_p50_s']:.3f} ({row['wait_p99_s']:.3f}), "
            f"{row['salesforce_p50_s']:.3f} ({row['salesforce_p99_s']:.3f}); "
            f"{row['push_calls']} push calls{verdict}"
        )
    met = "met" if burst["push_calls"] <= TARGET_BURST_CALLS else "MISSED"
    print(
        f"\nburst of {burst['changes']:,} opt-outs: {burst['push_calls']} API calls "
        f"(naive: {burst['naive_calls']:,}; floor {burst['floor']}), all accepted in "
        f"{burst['seconds']:.1f} s   target ≤ {TARGET_BURST_CALLS}: {met}"
    )
    met = "met" if idle["api_calls"] == 0 else "MISSED"
    print(
        f"idle {idle['seconds']:.0f} s with the pusher running: {idle['api_calls']} API calls, "
        f"{idle['logins']} logins   target 0: {met}"
    )


if __name__ == "__main__":
    main()
