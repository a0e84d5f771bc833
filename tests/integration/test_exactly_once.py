"""Exactly-once under failure: ingest processes killed with SIGKILL at random instants, and a
consumer group losing and regaining a member, while 20,000 messages stream in."""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Callable

import pytest

from adapters.event_store import address_keys
from adapters.log_verify import verify
from adapters.settings import Settings
from tests.integration.ingest_harness import (
    STOP_WITHIN_S,
    Worker,
    Workers,
    caught_up,
    keyed,
    produce,
    reader,
    wait_for,
)
from tests.integration.mixed_stream import expected_answers, mixed_changes

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

MESSAGES = 20_000
PERSONS = 5_000  # about four changes each, so persons are loaded and extended, not only created


KILLS = 25  # at least 20 are required; the stream is spread over this many
# Bounds for a slow, busy 2-core machine: a worker's start (Python, a group join, the first write)
# can take tens of seconds there, and the broker may answer NotLeaderForPartition for a while.
FIRST_WRITE_S = 300.0
CATCH_UP_S = 300.0


class Stream(threading.Thread):
    """Produces the 20,000 changes in chunks, each released by `gate(chunk index)`, so that
    they arrive while workers die (or, without a gate, at a steady pace)."""

    def __init__(
        self,
        config: Settings,
        chunks: int = 100,
        pause_s: float = 0.2,
        gate: Callable[[int], None] | None = None,
    ) -> None:
        super().__init__(daemon=True)
        self.config, self.chunks, self.pause_s, self.gate = config, chunks, pause_s, gate
        # Unsubscribes, removals and links; id-only, email-only and shared addresses; times
        # that tie and arrive out of order, through every partition.
        self.changes = mixed_changes(MESSAGES, PERSONS)
        self.error: BaseException | None = None
        self.produced = 0  # acknowledged by the broker so far
        self.at_gate = False  # waiting for its gate: nothing more comes until the test acts

    def run(self) -> None:
        try:
            size = len(self.changes) // self.chunks
            for index, start in enumerate(range(0, len(self.changes), size)):
                if self.gate is not None:
                    self.at_gate = True
                    self.gate(index)
                    self.at_gate = False
                self.produced += produce(self.config, keyed(self.changes[start : start + size]))
                time.sleep(self.pause_s)  # pacing the load, not waiting for a condition
        except BaseException as error:  # surfaced by the test thread
            self.error = error


def total_stored(config: Settings) -> int:
    """How many offsets of the inbound topic the store has recorded."""
    store = reader(config)
    try:
        names = [f"{config.topic_inbound}:{p}" for p in range(4)]
        return sum(position + 1 for position in store.positions(names).values())
    finally:
        store.close()


def assert_each_change_stored_exactly_once(
    config: Settings, stream: Stream, workers: Workers
) -> None:
    store = reader(config)
    try:
        wait_for(
            caught_up(config, store),
            CATCH_UP_S,
            "the store to reach the end of the topic",
            lambda: f"stored {total_stored(config)} of {MESSAGES}\n{workers.started[-1].tail()}",
        )
        counts = Counter(change.event_id for change in store.all_changes())
        chain = verify(store.recorder)  # type: ignore[arg-type]
    finally:
        store.close()
    assert chain.ok, f"a crash broke the log's hash chain: {chain.problem}"
    produced = {change.event_id for change in stream.changes}
    assert set(counts) == produced, f"lost {len(produced - set(counts))} changes"
    duplicated = {event_id: n for event_id, n in counts.items() if n > 1}
    assert not duplicated, f"{len(duplicated)} changes stored more than once"
    assert sum(counts.values()) == MESSAGES
    assert_every_answer_is_the_fold_of_what_was_produced(config, stream)


def assert_every_answer_is_the_fold_of_what_was_produced(config: Settings, stream: Stream) -> None:
    """The state a crash leaves, not only the count: every person's and address's answer."""
    answers, salesforce = expected_answers(stream.changes, address_keys(config))
    store = reader(config)
    try:
        wrong = [key for key, want in answers.items() if store.standing(key)[1].opted_out != want]
        relinked = [
            key
            for key, want in salesforce.items()
            if key.startswith("person:")
            and getattr(store.person(key), "salesforce_id", None) != want
        ]
    finally:
        store.close()
    assert not wrong, (
        f"{len(wrong)} of {len(answers)} answers differ from the rule, e.g. {wrong[:3]}"
    )
    assert not relinked, f"{len(relinked)} Salesforce links differ, e.g. {relinked[:3]}"


def progressed(config: Settings, before: int, worker: Worker, stream: Stream) -> Callable[[], bool]:
    """This incarnation has stored something, or has nothing to store until the test acts (all
    produced is stored and the stream waits at its gate, or is done), or died. (Not merely "all
    produced is stored": on a busy machine the next chunk may still be on its way, and a worker
    killed then has written nothing: the stream then ran out before 20 kills after a write.)"""

    def check() -> bool:
        stored = total_stored(config)
        idle = stream.at_gate or not stream.is_alive()
        return stored > before or (stored >= stream.produced and idle) or not worker.running()

    return check


def test_sigkill_at_random_instants_loses_and_duplicates_nothing(
    config: Settings, ingest_workers: Workers
) -> None:
    rng = random.Random(20_000)
    killed = [0]

    def after_enough_kills(chunk: int) -> None:
        # Spread the stream over KILLS kills after writing, whatever the machine's speed.
        wanted = chunk * KILLS // 100
        wait_for(lambda: killed[0] >= wanted, 600, f"{wanted} kills before chunk {chunk}")

    stream = Stream(config, chunks=100, gate=after_enough_kills)
    stream.start()
    kills = kills_while_streaming = kills_after_writing = 0
    # Static membership lets a restarted worker take its partitions back at once.
    while kills_after_writing < 20 or stream.is_alive():  # on a busy machine: more kills
        before = total_stored(config)
        worker = ingest_workers.start(config, OPTOUT_GROUP_INSTANCE_ID="killed-worker")
        # Kill once this incarnation has written something (or has nothing to write yet), at a
        # random instant after that.
        wait_for(
            progressed(config, before, worker, stream),
            FIRST_WRITE_S,
            f"worker {kills + 1} to store something (the store held {before} offsets)",
            worker.tail,
        )
        assert worker.running(), worker.tail()
        time.sleep(rng.uniform(0, 0.4))  # the random instant of the kill
        streaming = stream.is_alive()
        wrote = total_stored(config) > before
        worker.kill()
        kills += 1
        kills_while_streaming += streaming
        kills_after_writing += wrote
        # The stream waits for kills after writing: a fast ingest that has stored all it was
        # given is killed with nothing to write, and those kills must not use up the stream.
        killed[0] = kills_after_writing
        if kills > 200:
            break
    assert stream.error is None, stream.error
    print(
        f"{kills} SIGKILLs: {kills_while_streaming} while the stream was flowing, "
        f"{kills_after_writing} after the worker had stored changes"
    )
    assert kills_while_streaming >= 20 and kills_after_writing >= 20
    survivor = ingest_workers.start(config, OPTOUT_GROUP_INSTANCE_ID="killed-worker")
    assert_each_change_stored_exactly_once(config, stream, ingest_workers)
    assert survivor.stop() == 0, survivor.tail()


def test_two_workers_one_stopped_and_restarted_mid_stream(
    config: Settings, ingest_workers: Workers
) -> None:
    stream = Stream(config, chunks=40, pause_s=0.2)
    first = ingest_workers.start(config)
    second = ingest_workers.start(config)
    stream.start()
    wait_for(
        lambda: total_stored(config) > MESSAGES // 4,
        FIRST_WRITE_S,
        "a quarter of the stream to be stored",
        first.tail,
    )
    # Leaves the group (its partitions move to `first`), within the product's stop bound.
    assert second.stop(within_s=STOP_WITHIN_S) == 0, second.tail()
    stopped_at = total_stored(config)
    wait_for(
        lambda: total_stored(config) > stopped_at + 1000,
        CATCH_UP_S,
        "the survivor to store 1000 more on its own",
        first.tail,
    )
    third = ingest_workers.start(config)  # rejoins: partitions are shared out again
    stream.join(timeout=600)
    assert not stream.is_alive() and stream.error is None, stream.error
    assert_each_change_stored_exactly_once(config, stream, ingest_workers)
    assert first.stop() == 0, first.tail()
    assert third.stop() == 0, third.tail()
