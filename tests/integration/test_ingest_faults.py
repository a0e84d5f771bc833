"""No message stalls its partition, whatever makes it fail, and no lost message passes silently.

Every kind of failure to turn one message into a stored change — a contract error, a type the
domain does not know, a domain that raises on it, a store that keeps refusing it — dead-letters
that message with its code, and the next message of the partition is stored. Messages that no
longer exist in Kafka before the store recorded them stop the worker until an operator accepts
the gap, which is then recorded.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import msgspec
import psycopg
import pytest
from eventsourcing.persistence import StoredEvent, Tracking
from kafka import KafkaAdminClient, TopicPartition

from adapters import dead_letter, kafka_clients
from adapters.inbound import ChangeV1, PersonRef, encode
from adapters.settings import Settings
from consumers import bootstrap
from consumers.ingest import WRITE_ATTEMPTS
from domain.identity import aggregate_id
from domain.person import Person
from tests.e2e.cli import optout_sync as run_cli
from tests.factories import good_change, good_message
from tests.integration.ingest_harness import (
    REPO,
    caught_up,
    env_of,
    isolated_settings,
    reader,
)

pytestmark = [pytest.mark.kafka]


def produce_to_partition_0(config: Settings, values: list[bytes]) -> None:
    """In this order, on one partition: what follows a bad message is its partition's next."""
    sender = kafka_clients.producer(config)
    for value in values:
        sender.send(config.topic_inbound, key=b"same-partition", value=value, partition=0)
    sender.flush(timeout=60)
    sender.close()


def unsubscribe(person_id: str) -> ChangeV1:
    return good_change(person=PersonRef(person_id=person_id))


def write_a_history_this_version_cannot_read(
    config: Settings, person_id: str, provenance: str
) -> None:
    """A person's history as a newer version would have written it: an event type this version
    does not have, or a field it does not know."""
    store = reader(config)
    try:
        person = Person.register(f"person:{person_id}")
        stored = store.mapper.to_stored_event(person.collect_events()[0])
        topic, state = stored.topic, json.loads(stored.state)
        if provenance == "unknown event type":
            topic = "domain.person:Person.Merged"
        else:  # a field renamed by the newer version
            state["person_key"] = state.pop("key")
        store.recorder.insert_events(
            [
                StoredEvent(
                    stored.originator_id,
                    stored.originator_version,
                    topic,
                    json.dumps(state).encode(),
                )
            ]
        )
    finally:
        store.close()


def make_the_store_refuse(config: Settings, person_id: str) -> None:
    """A trigger that refuses every event of one person: a store that genuinely says no."""
    store = reader(config)
    table = store.recorder.events_table_name
    store.close()
    refused = aggregate_id(f"person:{person_id}")
    if config.database_url.startswith("sqlite"):
        with sqlite3.connect(config.database_url.removeprefix("sqlite:///")) as connection:
            connection.execute(
                f"CREATE TRIGGER refuse_one_person BEFORE INSERT ON {table} "
                f"WHEN NEW.originator_id = '{refused.hex}' "
                "BEGIN SELECT RAISE(ABORT, 'this store refuses that person'); END"
            )
        return
    with psycopg.connect(config.database_url, autocommit=True) as connection:
        connection.execute(
            "CREATE FUNCTION refuse_one_person() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            f"IF NEW.originator_id = '{refused}'::uuid THEN "
            "RAISE EXCEPTION 'this store refuses that person'; END IF; RETURN NEW; END $$"
        )
        connection.execute(
            f"CREATE TRIGGER refuse_one_person BEFORE INSERT ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION refuse_one_person()"
        )


def test_a_message_of_every_failure_kind_is_dead_lettered_and_the_next_one_is_stored(
    config: Settings,
) -> None:
    write_a_history_this_version_cannot_read(config, "p-newer-event", "unknown event type")
    write_a_history_this_version_cannot_read(config, "p-newer-field", "renamed field")
    make_the_store_refuse(config, "p-refused")
    goods = [unsubscribe(f"p-good-{i}") for i in range(6)]
    bad = {
        "invalid_json": b'{"type": "unsubscribed", oops',
        # A type the wire does not carry is one the domain does not know: they are one list.
        "unknown_type": json.dumps(good_message(type="resubscribed")).encode(),
        "domain_error (unknown event type)": encode(unsubscribe("p-newer-event")),
        "domain_error (renamed field)": encode(unsubscribe("p-newer-field")),
        "refused_by_store": encode(unsubscribe("p-refused")),
    }
    values = [encode(goods[0])]
    for value, good in zip(bad.values(), goods[1:], strict=True):
        values += [value, encode(good)]
    produce_to_partition_0(config, values)

    worker = bootstrap.ingest(config)
    store = worker.store
    done = caught_up(config, store)
    worker.run(until=lambda _stats: done(), idle_exit_s=60)

    assert done(), "the partition moved past every bad message"
    assert store.positions([f"{config.topic_inbound}:0"]) == {f"{config.topic_inbound}:0": 10}
    stored = [change.event_id for change in reader(config).all_changes()]
    assert sorted(map(str, stored)) == sorted(str(good.event_id) for good in goods)
    letters = {letter.origin_offset: letter for letter in dead_letter.read(config)}
    codes = {offset: letter.code for offset, letter in letters.items()}
    assert codes == {
        1: "invalid_json",
        3: "unknown_type",
        5: "domain_error",
        7: "domain_error",
        9: "refused_by_store",
    }
    assert "TopicError" in letters[5].reason and "TypeError" in letters[7].reason
    assert "this store refuses that person" in letters[9].reason
    assert all(letter.value == values[offset] for offset, letter in letters.items())
    assert worker.stats.dead_lettered == 5 and worker.stats.recorded == 6
    assert worker.stats.retries >= WRITE_ATTEMPTS, "the store was asked again before giving up"


def optout_sync(*args: str, config: Settings) -> subprocess.CompletedProcess[str]:
    return run_cli("-v", *args, env=env_of(config))


def test_a_store_behind_the_topics_log_start_stops_the_worker_until_the_gap_is_accepted(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    config = isolated_settings(kafka_bootstrap, f"sqlite:///{tmp_path / 'events.sqlite'}", tmp_path)
    early = [unsubscribe(f"p-early-{i}") for i in range(10)]
    late = [unsubscribe(f"p-late-{i}") for i in range(20)]
    produce_to_partition_0(config, [encode(change) for change in early])
    first = bootstrap.ingest(config)
    store = reader(config)
    done = caught_up(config, store)
    first.run(until=lambda _stats: done(), idle_exit_s=60)
    assert done()

    # The worker is away; 20 more arrive, and the first 10 of them are gone before it is back
    # (retention, or deleted records): offsets 10-19 were never stored and no longer exist.
    produce_to_partition_0(config, [encode(change) for change in late])
    admin = KafkaAdminClient(bootstrap_servers=config.kafka_bootstrap_servers)
    try:
        admin.delete_records({TopicPartition(config.topic_inbound, 0): 20})
    finally:
        admin.close()
    name = f"{config.topic_inbound}:0"

    stopped = optout_sync("ingest", "--no-prepare", "--idle-exit", "5", config=config)
    assert stopped.returncode == 1, stopped.stderr
    assert name in stopped.stderr and "offsets 10-19" in stopped.stderr
    assert f"--accept-gap {name}" in stopped.stderr and "Traceback" not in stopped.stderr
    assert store.positions([name]) == {name: 9}, "nothing was stored past the gap"

    accepted = optout_sync(
        "ingest", "--no-prepare", "--idle-exit", "5", "--accept-gap", name, "--json", config=config
    )
    assert accepted.returncode == 0, accepted.stderr
    assert f"WARNING consumers.ingest: {name}: accepted gap: offsets 10-19" in accepted.stderr
    assert msgspec.json.decode(accepted.stdout)["recorded"] == 10
    assert store.positions([name]) == {name: 29}
    stored = {change.event_id for change in store.all_changes()}
    assert stored == {change.event_id for change in early + late[10:]}
    [gap] = list(store.gaps())
    assert (gap.source, gap.first, gap.last) == (name, 10, 19)
    assert "--accept-gap" in gap.accepted_by

    # Recorded: the next start goes on without the flag.
    again = optout_sync("ingest", "--no-prepare", "--idle-exit", "3", config=config)
    assert again.returncode == 0, again.stderr
    store.close()


def test_a_store_ahead_of_its_topic_stops_the_worker_instead_of_skipping_messages(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """The topic was deleted and created again under the same name (or the store is another
    cluster's): its new messages sit at offsets the store has already recorded."""
    config = isolated_settings(kafka_bootstrap, f"sqlite:///{tmp_path / 'events.sqlite'}", tmp_path)
    name = f"{config.topic_inbound}:0"
    store = reader(config)
    store.record([], Tracking(name, 5))  # what the topic's earlier life left in the store
    produce_to_partition_0(config, [encode(unsubscribe(f"p-new-{i}")) for i in range(3)])

    stopped = optout_sync("ingest", "--no-prepare", "--idle-exit", "5", config=config)

    assert stopped.returncode == 1, stopped.stderr
    assert f"{name}: the event store has recorded offsets up to 5" in stopped.stderr
    assert "topic ends at offset 3" in stopped.stderr and "Traceback" not in stopped.stderr
    assert store.positions([name]) == {name: 5} and list(store.all_changes()) == []
    store.close()


def test_the_gap_flag_names_a_partition() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "consumers", "ingest", "--accept-gap", "no-partition"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and "TOPIC:PARTITION" in result.stderr
