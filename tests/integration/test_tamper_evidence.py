"""`optout-sync verify`: the hash chain beside the event log names the first event changed,
deleted or re-ordered by hand in the store's tables, passes on an untouched log and after
`forget` — on SQLite and on PostgreSQL."""

from __future__ import annotations

import json
import shutil
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

from adapters.event_store import environment
from consumers import bootstrap
from domain.application import Change, ChangeRecorder
from tests.e2e.cli import optout_sync
from tests.integration.log_store import AT, Store, store, unsubscribe

__all__ = ["store"]
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def twice(person_id: str, email: str | None = None) -> list[Change]:
    """A new person's two changes: two events (the first registers the person)."""
    return [unsubscribe(person_id, email), unsubscribe(person_id, at=AT + timedelta(minutes=30))]


def three_writes(store: Store) -> None:
    """Three insert transactions: 4 events, 4 events, 2 events (ids 1-10)."""
    store.record(
        [*twice("p-1", "one@example.com"), *twice("p-2")],
        [*twice("p-3", "three@example.com"), *twice("p-4")],
        [
            unsubscribe("p-1", "one@example.com", AT + timedelta(hours=1)),
            unsubscribe("p-2", at=AT + timedelta(hours=1)),
        ],
    )


def test_an_untouched_log_passes_and_forget_leaves_it_intact(store: Store) -> None:
    three_writes(store)
    code, verdict = store.verify()
    assert code == 0, verdict
    assert (verdict["ok"], verdict["events"], verdict["chain_rows"]) == (True, 10, 3)
    assert verdict["last_event"] == 10 and len(verdict["head"]) == 64 and not verdict["problem"]

    forgotten = optout_sync("forget", "one@example.com", "--json", env=store.env, timeout=120)
    assert forgotten.returncode == 0, forgotten.stderr
    assert json.loads(forgotten.stdout) == {"erased": 1, "opted_out": True}
    assert store.sql("SELECT email FROM optout_addresses WHERE email IS NOT NULL") == [
        ("three@example.com",)
    ]
    code, after = store.verify("--expect-head", verdict["head"])
    assert code == 0, after
    # The events hold no address: erasing one changes nothing the chain covers.
    assert after["head"] == verdict["head"] and after["events"] == 10

    text = optout_sync("verify", env=store.env, timeout=120)
    assert text.returncode == 0 and "log intact: 10 events in 3 chain rows" in text.stdout
    assert verdict["head"] in text.stdout


def test_a_changed_event_is_named(store: Store) -> None:
    three_writes(store)
    ((originator, version),) = store.sql(
        f"SELECT originator_id, originator_version FROM {store.events} WHERE {store.id} = 6"
    )
    # A removal's reason, a source, anything: here the source of an unsubscribe.
    store.sql(
        f"UPDATE {store.events} SET state = ? WHERE {store.id} = 6",
        params=(
            bytes(
                store.sql(f"SELECT state FROM {store.events} WHERE {store.id} = 6")[0][0]
            ).replace(b'"marketing"', b'"sales"'),
        ),
    )
    code, verdict = store.verify()
    assert code == 1
    problem = verdict["problem"]
    assert (problem["kind"], problem["notification_id"]) == ("altered", 6), problem
    assert uuid.UUID(problem["originator_id"]) == uuid.UUID(str(originator))
    assert problem["originator_version"] == version
    assert verdict["events"] == 5 and not verdict["ok"]


def test_a_deleted_event_is_named(store: Store) -> None:
    three_writes(store)
    store.sql(f"DELETE FROM {store.events} WHERE {store.id} = 3")
    code, verdict = store.verify()
    assert code == 1
    assert verdict["problem"]["kind"] == "deleted"
    assert verdict["problem"]["notification_id"] == 3
    text = optout_sync("verify", env=store.env, timeout=120)
    assert (
        text.returncode == 1 and "event #3 is in the chain but no longer in the log" in text.stdout
    )


def test_the_newest_event_deleted_and_its_number_reused_is_named(store: Store) -> None:
    three_writes(store)
    store.sql(f"DELETE FROM {store.events} WHERE {store.id} = 10")
    if not store.sqlite:  # PostgreSQL's sequence never reuses: make it, as SQLite's rowid does
        store.sql("SELECT setval(pg_get_serial_sequence('optout_events', 'notification_id'), 9)")
    store.record(twice("p-9"))  # the writer is not stopped by the tampering
    code, verdict = store.verify()
    assert code == 1
    assert (verdict["problem"]["kind"], verdict["problem"]["notification_id"]) == ("deleted", 10)


def test_re_ordered_events_are_named(store: Store) -> None:
    three_writes(store)
    store.sql(
        f"UPDATE {store.events} SET {store.id} = 1000 WHERE {store.id} = 2",
        f"UPDATE {store.events} SET {store.id} = 2 WHERE {store.id} = 7",
        f"UPDATE {store.events} SET {store.id} = 7 WHERE {store.id} = 1000",
    )
    code, verdict = store.verify()
    assert code == 1
    problem = verdict["problem"]
    assert (problem["kind"], problem["notification_id"]) == ("reordered", 2), problem
    assert "recorded as #7" in problem["detail"]


def test_an_event_written_outside_the_chain_is_named(store: Store) -> None:
    three_writes(store)
    ((topic, state),) = store.sql(f"SELECT topic, state FROM {store.events} WHERE {store.id} = 2")
    forged = "0" * 31 + "1"
    store.sql(
        f"INSERT INTO {store.events} (originator_id, originator_version, topic, state) "
        "VALUES (?, 1, ?, ?)",
        params=(forged if store.sqlite else uuid.UUID(forged), topic, state),
    )
    code, verdict = store.verify()
    assert code == 1 and verdict["problem"]["kind"] == "unchained"
    assert verdict["problem"]["notification_id"] == 11


def test_a_log_rewritten_with_its_chain_is_caught_only_by_a_kept_head(store: Store) -> None:
    three_writes(store)
    kept = store.verify()[1]["head"]
    store.record(twice("p-5"))
    code, later = store.verify("--expect-head", kept)
    assert code == 0 and later["head"] != kept, later

    # Someone alters an event, then rebuilds the whole chain over the altered log.
    store.sql(f"DELETE FROM {store.events} WHERE {store.id} = 4", "DELETE FROM optout_chain")
    store.record()  # opening the store with create_table seals a chain-less log afresh
    code, rewritten = store.verify()
    assert code == 0 and rewritten["sealed_events"] == 11, "a consistent rewrite passes alone..."
    code, against_kept = store.verify("--expect-head", kept)
    assert code == 1, "...but not against the head kept before"
    assert against_kept["problem"]["kind"] == "head_not_found"


def test_gaps_in_the_ids_are_no_tampering(store: Store) -> None:
    """A rolled-back transaction leaves a gap in PostgreSQL's ids; the chain follows the ids."""
    if store.sqlite:  # SQLite's rowids have no gaps of their own: make one
        store.record(twice("p-1"), twice("p-2"))
        store.sql(
            "DELETE FROM optout_chain",
            "UPDATE stored_events SET rowid = 5 WHERE rowid = 4",
            "UPDATE stored_events SET rowid = 4 WHERE rowid = 3",
        )
    else:
        store.record(twice("p-1"))
        store.sql("SELECT nextval(pg_get_serial_sequence('optout_events', 'notification_id'))")
        store.record(twice("p-2"))
        assert store.sql("SELECT max(notification_id) FROM optout_events") == [(5,)]
        store.sql("DELETE FROM optout_chain")
    store.record()  # sealed: one row per run of consecutive ids
    store.record([unsubscribe("p-3")])
    code, verdict = store.verify()
    assert code == 0, verdict
    assert verdict["sealed_events"] == 4 and verdict["chain_rows"] == 3


def test_a_store_of_version_0_1_is_sealed_when_the_chain_is_created(tmp_path: Path) -> None:
    copy = tmp_path / "store.sqlite"
    shutil.copy(FIXTURES / "store-0.1.sqlite", copy)
    store = Store(f"sqlite:///{copy}", tmp_path)
    bootstrap.create_tables(store.url)  # what `init` does on an upgrade
    store.record(
        [
            unsubscribe("p-new", at=datetime(2026, 11, 3, tzinfo=UTC)),
            unsubscribe("p-new", at=datetime(2026, 11, 4, tzinfo=UTC)),
        ]
    )
    code, verdict = store.verify()
    assert code == 0, verdict
    assert (verdict["sealed_events"], verdict["events"], verdict["chain_rows"]) == (8, 10, 2)
    text = optout_sync("verify", env=store.env, timeout=120)
    assert "8 events were stored before the chain existed and were sealed" in text.stdout

    store.sql(
        "UPDATE stored_events SET topic = 'domain.person:Person.Unsubscribed' WHERE rowid = 3"
    )
    code, verdict = store.verify()
    assert code == 1 and verdict["problem"]["notification_id"] == 3


def test_verify_has_help_and_refuses_a_malformed_head(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'events.sqlite'}", tmp_path)
    helped = optout_sync("verify", "--help", env=store.env)
    assert helped.returncode == 0 and "--expect-head" in helped.stdout
    bad = optout_sync("verify", "--expect-head", "xyz", env=store.env)
    assert bad.returncode == 2 and "64 hexadecimal digits" in bad.stderr
    store.record([unsubscribe("p-1")])
    store.sql("DROP TABLE optout_chain")
    no_chain = optout_sync("verify", env=store.env)
    assert no_chain.returncode == 1 and "optout-sync init" in no_chain.stderr


def test_the_chain_holds_with_writers_racing(store: Store) -> None:
    """Each writer reads the chain's head inside its own transaction: concurrent writers
    (serialised by SQLite's write lock, by PostgreSQL's table lock) still form one chain."""
    writers, batches = 4, 15
    store.record()  # the tables, once

    def write(writer: int) -> None:
        log = ChangeRecorder(env=environment(store.url))
        try:
            for batch in range(batches):
                log.record([unsubscribe(f"w{writer}-b{batch}-{i}") for i in range(3)])
        finally:
            log.close()

    with ThreadPoolExecutor(writers) as pool:
        for done in [pool.submit(write, w) for w in range(writers)]:
            done.result(timeout=300)
    code, verdict = store.verify()
    assert code == 0, verdict
    # Three new persons a batch: one event each (registered with their first change).
    assert (verdict["events"], verdict["chain_rows"]) == (writers * batches * 3, writers * batches)
