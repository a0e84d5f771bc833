"""Read-model rebuild throughput: events/s of `projections rebuild` for each read model, from a log
of stored events, and the ratio to a plain read of the same log in the same run.

    ./run bench rebuild [--events 1000000] [--stores sqlite,postgres]

The log is seeded directly through the recorder in big batches (persons registering,
unsubscribing via sales and marketing, carrying addresses, some removals and links): what an
ingest would have stored, without Kafka. Uses OPTOUT_BENCH_DATABASE_URL (a PostgreSQL server
URL) when given, else the project's local PostgreSQL (started if needed).
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import devservices
from adapters.event_store import environment
from consumers.read_models import MODELS, read_models
from devservices import database as local_postgres
from domain.application import ChangeRecorder
from domain.identity import AddressKeys, person_key
from domain.person import Person, Provenance
from projections.per_person import PERSON_TOPICS
from projections.stored import Facts
from projections.views import REBUILD_PAGE, rebuild_together, without_cycle_collection

# The first unsubscribe (which registers the person: one stored event), another unsubscribe, one
# more change, one more unsubscribe. (Five before a first change was stored as one event.)
EVENTS_PER_PERSON = 4
SEED_BATCH = 2_000  # events per insert (psycopg's pipeline stalled on one of 20,000)
PAGE = REBUILD_PAGE  # every read of the log here reads pages of what a rebuild reads
KEYS = AddressKeys(b"b" * 32)
AT = datetime(2026, 3, 1, tzinfo=UTC)


def seed(store: ChangeRecorder, events: int) -> int:
    """Stores about `events` events through the recorder, in batches; returns how many."""
    persons = events // EVENTS_PER_PERSON
    batch: list[object] = []
    stored = 0

    def provenance(n: int, source: str, actor: str, minutes: int) -> Provenance:
        reason = "asked" if actor == "user" else None
        return Provenance(
            uuid.uuid4(),
            source,
            actor,
            "rep-1",
            None,
            "manual",
            AT + timedelta(minutes=minutes),
            reason,
        )

    for n in range(persons):
        person = Person.register(person_key(f"bench-{n}"))
        mailbox = KEYS.key_of(f"p{n // 2}@example.com")  # two persons share each address
        person.unsubscribe(provenance(n, "sales", "user", 1), mailbox=mailbox)
        person.unsubscribe(provenance(n, "marketing", "recipient", 2), mailbox=mailbox)
        if n % 3 == 0:
            person.remove_unsubscribe(provenance(n, "sales", "user", 3))
        else:
            person.link(provenance(n, "salesforce", "system", 3), "0035g00000AbCdEAAV")
        person.unsubscribe(provenance(n, "sales", "user", 4))
        batch.extend(person.collect_events())
        if len(batch) >= SEED_BATCH:
            stored += _insert(store, batch)
            batch = []
    if batch:
        stored += _insert(store, batch)
    return stored


def _insert(store: ChangeRecorder, events: list[object]) -> int:
    store.recorder.insert_events([store.mapper.to_stored_event(e) for e in events])  # type: ignore[arg-type]
    return len(events)


def plain_read(store: ChangeRecorder, decode: bool) -> tuple[int, float]:
    """The baseline: the same log read page by page through eventsourcing's recorder (its
    notifications), with the topics the read models follow (and, with `decode`, turned into
    domain events by eventsourcing's mapper), nothing written."""
    models = read_models(store)
    follower, to_event = models.follower, store.mapper.to_domain_event
    started, read, at = time.perf_counter(), 0, 0
    while True:
        page = follower.page(at, PAGE, PERSON_TOPICS)
        if not page:
            break
        if decode:
            for notification in page:
                to_event(notification)
        read += len(page)
        at = page[-1].id
    elapsed = time.perf_counter() - started
    models.close()
    return read, read / elapsed


def lean_read(store: ChangeRecorder, decode: bool) -> float:
    """What a rebuild reads: the same pages as plain rows (`LogFollower.stored_page`) and, with
    `decode`, the read models' facts (`projections.stored.Facts`), nothing written."""
    models = read_models(store)
    follower, facts = models.follower, Facts(store.mapper)
    started, read, at = time.perf_counter(), 0, 0
    while True:
        page = follower.stored_page(at, PAGE, PERSON_TOPICS)
        if not page:
            break
        if decode:
            facts(page)
        read += len(page)
        at = page[-1][0]
    elapsed = time.perf_counter() - started
    models.close()
    return read / elapsed


def rebuild(store: ChangeRecorder, name: str) -> float:
    models = read_models(store)
    projector = models.projectors[name]
    projector.ensure()
    head = models.follower.head()
    started = time.perf_counter()
    projector.rebuild()
    elapsed = time.perf_counter() - started
    assert projector.status().position == head
    models.close()
    return head / elapsed


def rebuild_all(store: ChangeRecorder) -> float:
    """`projections rebuild --all`: the three read models in one pass over the log."""
    models = read_models(store)
    head = models.follower.head()
    started = time.perf_counter()
    rebuild_together(list(models.projectors.values()))
    elapsed = time.perf_counter() - started
    models.close()
    return head / elapsed


def measure(label: str, url: str, events: int) -> list[tuple[str, float, float]]:
    store = ChangeRecorder(env=environment(url, create_table=True))
    started = time.perf_counter()
    stored = seed(store, events)
    print(f"{label}: seeded {stored:,} events in {time.perf_counter() - started:.0f} s", flush=True)
    plain_read(store, decode=False)  # warm-up: the file or the server's cache
    _, plain = plain_read(store, decode=False)
    _, decoded = plain_read(store, decode=True)
    lean, facts = lean_read(store, decode=False), lean_read(store, decode=True)
    # A rebuild reads, applies and writes each page without the cyclic collector (nothing it
    # makes is in a cycle); the baseline reads as any process does. The same read without it:
    with without_cycle_collection():
        _, plain_no_gc = plain_read(store, decode=False)
    rows = [
        (f"{label}: plain read", plain, 1.0),
        (f"{label}: plain read, no cyclic GC", plain_no_gc, plain_no_gc / plain),
        (f"{label}: read and decode", decoded, decoded / plain),
        (f"{label}: lean read (rows)", lean, lean / plain),
        (f"{label}: lean read and fast decode", facts, facts / plain),
    ]
    for name in MODELS:
        rate = rebuild(store, name)
        rows.append((f"{label}: rebuild {name}", rate, rate / plain))
        print(f"  rebuild {name}: {rate:,.0f} events/s", flush=True)  # a long run shows progress
    rate = rebuild_all(store)
    rows.append((f"{label}: rebuild --all (one pass)", rate, rate / plain))
    store.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--stores", default="sqlite,postgres")
    args = parser.parse_args()
    stores = args.stores.split(",")

    state = Path(tempfile.mkdtemp(prefix="optout-bench-"))
    rows: list[tuple[str, float, float]] = []
    if "sqlite" in stores:
        try:
            rows += measure("SQLite", f"sqlite:///{state / 'events.sqlite'}", args.events)
        finally:
            shutil.rmtree(state)  # a million events and their read models: about 2 GB
    if "postgres" in stores:
        server_url = os.environ.get("OPTOUT_BENCH_DATABASE_URL")
        if not server_url:
            services = devservices.settings.load()
            devservices.up("postgres", services)
            server_url = local_postgres.url(services, "optout")
        name = f"bench_{uuid.uuid4().hex[:8]}"
        try:
            rows += measure(
                "PostgreSQL", local_postgres.create_database(server_url, name), args.events
            )
        finally:
            local_postgres.drop_database(server_url, name)

    print(f"\n{'':44}{'events/s':>10}{'vs plain':>10}   target ratio 0.5")
    for label, rate, ratio in rows:
        # The target is each model's own rebuild; `--all` (three models in one pass) has none.
        targeted = "rebuild" in label and "--all" not in label
        verdict = ("met" if ratio >= 0.5 else "MISSED") if targeted else ""
        print(f"{label:44}{rate:10,.0f}{ratio:10.2f}   {verdict}")
    print("load average at the end: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))


if __name__ == "__main__":
    main()
