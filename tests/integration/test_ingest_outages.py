"""A worker whose broker pauses or goes away: it says so at WARNING, waits without spinning,
stops within 15 s when told, and every change is stored exactly once when the broker is back.

The broker here is the test module's own (other ports, other state dir): the shared broker the
rest of the suite uses is never paused or stopped.
"""

from __future__ import annotations

import os
import re
import time
from collections import Counter
from pathlib import Path

import pytest

from adapters.inbound import ChangeV1, PersonRef
from adapters.settings import Settings
from tests.factories import good_change
from tests.integration.ingest_harness import (
    STOP_WITHIN_S,
    Workers,
    caught_up,
    isolated_settings,
    keyed,
    produce,
    reader,
    wait_for,
)
from tests.integration.private_broker import PrivateBroker

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

STOPPED_FOR_S = 60.0
MAX_CORE_SHARE = 0.05
PAUSED_CORE_SHARE = 0.10  # a shorter window, which includes noticing the spin
NOT_ANSWERING = re.compile(r" WARNING consumers\.outage: Kafka at \S+ does not answer ")


@pytest.fixture
def config(broker: PrivateBroker, tmp_path: Path) -> Settings:
    return isolated_settings(broker.bootstrap, f"sqlite:///{tmp_path / 'events.sqlite'}", tmp_path)


def changes(prefix: str, count: int) -> list[ChangeV1]:
    return [good_change(person=PersonRef(person_id=f"{prefix}-{i}")) for i in range(count)]


def assert_each_stored_exactly_once(config: Settings, expected: list[ChangeV1]) -> None:
    store = reader(config)
    try:
        wait_for(caught_up(config, store), 180, "the store to reach the end of the topic")
        counts = Counter(change.event_id for change in store.all_changes())
    finally:
        store.close()
    assert set(counts) == {change.event_id for change in expected}
    assert all(n == 1 for n in counts.values()), "a change was stored twice"


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc/<pid>/stat."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_a_worker_whose_broker_is_paused_exits_within_15_s_of_sigterm_and_loses_nothing(
    broker: PrivateBroker, config: Settings, ingest_workers: Workers
) -> None:
    first = changes("before", 200)
    produce(config, keyed(first))
    worker = ingest_workers.start(config)
    store = reader(config)
    wait_for(caught_up(config, store), 120, "the worker to store the first changes", worker.tail)
    second = changes("paused", 200)
    produce(config, keyed(second))  # in flight when the broker stops answering
    broker.pause()
    try:
        cpu_before, paused_at = cpu_seconds(worker.pid), time.monotonic()
        wait_for(
            lambda: NOT_ANSWERING.search(worker.log()) is not None,
            90,
            "the worker to say at WARNING that Kafka does not answer",
            worker.tail,
        )
        # kafka-python spins in poll() once a heartbeat is overdue; the worker notices at once.
        share = (cpu_seconds(worker.pid) - cpu_before) / (time.monotonic() - paused_at)
        assert share < PAUSED_CORE_SHARE, f"{share:.1%} of a core while paused\n{worker.tail()}"
        began = time.monotonic()
        code = worker.stop(within_s=STOP_WITHIN_S)
        print(f"exited {time.monotonic() - began:.1f} s after SIGTERM, code {code}")
    finally:
        broker.resume()
    assert code in (0, 143), worker.tail()  # a clean stop, or the stop deadline's exit

    third = changes("after", 100)
    produce(config, keyed(third))
    ingest_workers.start(config)
    assert_each_stored_exactly_once(config, first + second + third)


def test_a_worker_whose_broker_is_stopped_for_60_s_idles_and_stores_everything_once_it_is_back(
    broker: PrivateBroker, config: Settings, ingest_workers: Workers
) -> None:
    first = changes("before", 200)
    produce(config, keyed(first))
    worker = ingest_workers.start(config)
    store = reader(config)
    wait_for(caught_up(config, store), 120, "the worker to store the first changes", worker.tail)
    broker.stop()
    try:
        cpu_before, began = cpu_seconds(worker.pid), time.monotonic()
        time.sleep(STOPPED_FOR_S)  # the measurement window itself, not a wait for a condition
        share = (cpu_seconds(worker.pid) - cpu_before) / (time.monotonic() - began)
        assert worker.running(), worker.tail()
    finally:
        broker.start()
    print(f"the worker used {share:.1%} of a core while its broker was stopped")
    assert share < MAX_CORE_SHARE, f"{share:.1%} of a core while waiting\n{worker.tail()}"
    assert NOT_ANSWERING.search(worker.log()), "the outage is in the log at WARNING"

    second = changes("after", 200)
    produce(config, keyed(second))
    assert_each_stored_exactly_once(config, first + second)
    assert "Kafka at" in worker.log() and "answers again" in worker.log()
    assert worker.running(), worker.tail()
