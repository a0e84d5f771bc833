"""The ingest consumer against the real broker, on SQLite and on PostgreSQL."""

from __future__ import annotations

import uuid
from collections import Counter
from pathlib import Path

import msgspec
import pytest

from adapters import dead_letter, kafka_clients
from adapters.inbound import PersonRef
from adapters.settings import Secret, Settings
from consumers import bootstrap
from consumers.ingest import Ingest
from tests.bad_messages import BAD_MESSAGES
from tests.factories import good_change
from tests.integration.ingest_harness import (
    caught_up,
    keyed,
    produce,
    reader,
)

pytestmark = [pytest.mark.kafka]


def run_until_caught_up(config: Settings, *, group: str | None = None) -> Ingest:
    if group is not None:
        config = Settings(
            **{**{f: getattr(config, f) for f in config.__struct_fields__}, "consumer_group": group}
        )
    worker = bootstrap.ingest(config)
    store = worker.store
    done = caught_up(config, store)
    worker.run(until=lambda _stats: done(), idle_exit_s=20)
    assert done(), "the ingest went idle before storing every offset"
    return worker


def stored_event_ids(config: Settings) -> list[uuid.UUID]:
    store = reader(config)
    try:
        return [change.event_id for change in store.all_changes()]
    finally:
        store.close()


def test_the_same_message_delivered_twice_is_stored_once(config: Settings) -> None:
    change = good_change()
    produce(config, keyed([change, change]))  # re-produced with the same event id
    worker = run_until_caught_up(config)
    assert (worker.stats.recorded, worker.stats.duplicates) == (1, 1)
    assert stored_event_ids(config) == [change.event_id]

    # Offsets reset: a new consumer group reads the topic from the start again.
    again = run_until_caught_up(config, group=f"{config.consumer_group}-reset")
    assert again.stats.recorded == 0 and again.stats.redelivered == 2
    assert stored_event_ids(config) == [change.event_id]


def test_every_kind_of_bad_message_is_dead_lettered_and_the_good_ones_around_it_are_stored(
    config: Settings,
) -> None:
    goods = []
    stream: list[tuple[bytes | None, bytes | None]] = []
    for index, bad in enumerate(BAD_MESSAGES):
        good = good_change(person=PersonRef(person_id=f"p-{index}"))
        goods.append(good)
        stream += keyed([good])
        stream.append((f"bad-{index}".encode(), bad.value))
    produce(config, stream)
    worker = run_until_caught_up(config)

    assert sorted(map(str, stored_event_ids(config))) == sorted(str(g.event_id) for g in goods)
    letters = {letter.key: letter for letter in dead_letter.read(config)}
    assert worker.stats.dead_lettered == len(BAD_MESSAGES) == len(letters)
    for index, bad in enumerate(BAD_MESSAGES):
        letter = letters[f"bad-{index}".encode()]
        assert letter.code == bad.code, bad.name
        assert letter.value == bad.value, f"{bad.name}: the original bytes are kept"
        assert letter.reason and "@" not in letter.reason
        assert letter.origin_topic == config.topic_inbound and letter.origin_offset >= 0


def test_dead_letters_can_be_redriven_to_the_inbound_topic(config: Settings) -> None:
    produce(config, [(b"k", b"not json")])
    run_until_caught_up(config)
    [letter] = list(dead_letter.read(config))
    assert dead_letter.redrive(config, [letter]) == 1
    second = run_until_caught_up(config)
    assert second.stats.dead_lettered == 1  # still bad, so it is back with its reason
    assert len(list(dead_letter.read(config))) == 2


def zombie_of(config: Settings) -> Ingest:
    """A zombie: a member of another group whose first read of each stored position is stale, as
    a worker's is after losing its partitions unnoticed during a long pause. Its writes still go
    to the real store, which must not store anything twice."""
    zombie_config = msgspec.structs.replace(config, consumer_group=f"{config.consumer_group}-z")
    zombie = bootstrap.ingest(zombie_config)
    store = zombie.store
    true_position, stale = store.position, {f"{config.topic_inbound}:{p}" for p in range(4)}

    def stale_first_read(name: str) -> int | None:
        if name in stale:
            stale.discard(name)  # its first read of each partition is stale
            return None
        return true_position(name)

    store.position = stale_first_read  # type: ignore[method-assign]
    return zombie


def run_zombie(config: Settings) -> Ingest:
    zombie = zombie_of(config)
    done = caught_up(config, reader(config))
    zombie.run(until=lambda _stats: done(), idle_exit_s=20)
    return zombie


def test_a_worker_with_a_stale_view_of_its_partitions_writes_nothing_twice(
    config: Settings,
) -> None:
    changes = [good_change(person=PersonRef(person_id=f"p-{i % 7}")) for i in range(40)]
    produce(config, keyed(changes))
    first = run_until_caught_up(config)
    assert first.stats.recorded == 40

    # Its slices end at the stored positions: the position fence refuses them.
    zombie = run_zombie(config)
    assert zombie.stats.retries >= 1, "the store's position fence refused the stale write"
    assert zombie.stats.recorded == 0
    assert sorted(map(str, stored_event_ids(config))) == sorted(str(c.event_id) for c in changes)


def test_a_stale_worker_whose_slice_runs_past_the_stored_position_stores_only_what_is_new(
    config: Settings,
) -> None:
    stored = [good_change(person=PersonRef(person_id=f"p-{i % 7}")) for i in range(40)]
    produce(config, keyed(stored))
    assert run_until_caught_up(config).stats.recorded == 40
    new = [good_change(person=PersonRef(person_id=f"p-{i % 7}")) for i in range(20)]
    produce(config, keyed(new))

    # Its slices hold each partition's stored prefix and the new changes after it. The fence lets
    # a slice that ends past the stored position through; each person's record of the event ids
    # it has applied is what keeps the prefix from being stored twice.
    zombie = run_zombie(config)
    assert zombie.stats.duplicates > 0, "a slice held stored changes and new ones"
    assert zombie.stats.recorded == 20
    counts = Counter(stored_event_ids(config))
    assert set(counts) == {change.event_id for change in stored + new}
    assert set(counts.values()) == {1}, "nothing is stored twice"
    store = reader(config)
    assert caught_up(config, store)(), "the positions moved to the end of every partition"


def test_a_replaced_store_is_filled_again_from_kafka_whatever_offsets_the_group_committed(
    config: Settings, tmp_path: Path
) -> None:
    changes = [good_change(person=PersonRef(person_id=f"p-{i}")) for i in range(30)]
    produce(config, keyed(changes))
    run_until_caught_up(config)  # the group has now committed the end of every partition

    # The store is replaced (restored from an old backup, say): empty, same consumer group.
    replaced = msgspec.structs.replace(
        config, database_url=Secret(f"sqlite:///{tmp_path / 'restored.sqlite'}")
    )
    bootstrap.prepare(replaced)
    again = run_until_caught_up(replaced)
    assert again.stats.recorded == 30
    assert sorted(map(str, stored_event_ids(replaced))) == sorted(str(c.event_id) for c in changes)


def test_a_value_too_big_to_dead_letter_whole_keeps_its_head_size_and_hash(
    config: Settings,
) -> None:
    huge = b'{"x":"' + b"a" * (9 * 1024 * 1024) + b'"}'  # over the 8 MiB topic limit raw
    # Compressed, the topic accepts it; the producer checks the uncompressed size first.
    sender = kafka_clients.producer(
        config, compression_type="gzip", max_request_size=16 * 1024 * 1024
    )
    sender.send(config.topic_inbound, key=b"huge", value=huge).get(timeout=60)
    sender.close()
    produce(config, keyed([good_change()]))
    worker = run_until_caught_up(config)

    assert (worker.stats.recorded, worker.stats.dead_lettered) == (1, 1)
    [letter] = list(dead_letter.read(config))
    assert letter.code == "oversized" and letter.truncated and letter.size == len(huge)
    assert letter.value == huge[: dead_letter.MAX_KEPT_VALUE_BYTES]
    with pytest.raises(ValueError, match="first bytes"):
        dead_letter.redrive(config, [letter])
