"""Helpers for the ingest tests: isolated topics and groups per test, workers that are always
reaped, producing, waiting."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

import pytest
from kafka import KafkaConsumer, TopicPartition

from adapters import kafka_clients
from adapters.inbound import ChangeV1, encode, kafka_key
from adapters.settings import Settings, load
from consumers import bootstrap
from domain.application import ChangeRecorder
from tests.kafka_scratch import scratch_suffix

REPO = Path(__file__).resolve().parents[2]


def isolated_settings(bootstrap_servers: str, database_url: str, state_dir: Path) -> Settings:
    """Settings with a topic pair and consumer group of its own, tables and topics created."""
    suffix = scratch_suffix(bootstrap_servers)
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap_servers,
        "OPTOUT_DATABASE_URL": database_url,
        "OPTOUT_STATE_DIR": str(state_dir),
        "OPTOUT_TOPIC_INBOUND": f"test.changes.{suffix}",
        "OPTOUT_TOPIC_STATE": f"test.state.{suffix}",
        "OPTOUT_CONSUMER_GROUP": f"test-ingest-{suffix}",
    }
    config = load(env)
    bootstrap.prepare(config)
    return config


def env_of(config: Settings, **extra: str) -> dict[str, str]:
    """The environment a subprocess needs to run with these settings."""
    return {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": config.kafka_bootstrap_servers,
        "OPTOUT_DATABASE_URL": config.database_url,
        "OPTOUT_STATE_DIR": str(config.state_dir),
        "OPTOUT_TOPIC_INBOUND": config.topic_inbound,
        "OPTOUT_TOPIC_DEAD_LETTER": config.topic_dead_letter,
        "OPTOUT_TOPIC_STATE": config.topic_state,
        "OPTOUT_CONSUMER_GROUP": config.consumer_group,
        **extra,
    }


# A worker asked to stop exits within 15 s (the product's promise); reaping gives it a little more
# on a busy machine before SIGKILL.
STOP_WITHIN_S = 15.0
REAP_AFTER_SIGTERM_S = 25.0


# Runs first in the child, after exec: it asks for SIGTERM when the test process dies (prctl
# PR_SET_PDEATHSIG), so that not even a SIGKILLed test run leaves a worker behind, then becomes the
# command. Not a preexec_fn: code run between fork and exec can deadlock on a lock another of the
# test's threads held at the fork (a worker then hung before exec, with an empty log).
_LAUNCHER = """
import ctypes, os, signal, sys
ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)
if os.getppid() != int(sys.argv[1]):
    sys.exit("the test process died before the worker started")
os.execvp(sys.argv[2], sys.argv[2:])
"""


def dying_with_the_test(command: Sequence[str]) -> list[str]:
    """The command, run so that it gets SIGTERM when the test process dies, however it dies.
    (Linux sends it when the starting *thread* ends: start workers from the test.)"""
    return [sys.executable, "-c", _LAUNCHER, str(os.getpid()), *command]


class Worker:
    """One `optout-sync -v ingest` process with its log in a file (a pipe nobody reads fills up
    and blocks the worker)."""

    def __init__(self, config: Settings, log_path: Path, args: Iterable[str], env: dict[str, str]):
        self.log_path = log_path
        with log_path.open("ab") as log:
            self.process = subprocess.Popen(
                dying_with_the_test(
                    [sys.executable, "-m", "consumers", "-v", "ingest", "--no-prepare", *args]
                ),
                cwd=REPO,
                env=env_of(config, **env),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )

    @property
    def pid(self) -> int:
        return self.process.pid

    def running(self) -> bool:
        return self.process.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def tail(self, lines: int = 40) -> str:
        return f"--- last lines of {self.log_path} ---\n" + "\n".join(
            self.log().splitlines()[-lines:]
        )

    def stop(self, within_s: float = STOP_WITHIN_S) -> int:
        """SIGTERM, and its exit code once it has exited; fails the test if it takes longer."""
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=within_s)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"worker {self.pid} had not exited {within_s:.0f}s after SIGTERM\n{self.tail()}"
            ) from None

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=60)

    def reap(self) -> None:
        """Ends it whatever state it is in: SIGTERM, SIGKILL after a bound, and waits."""
        if self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=REAP_AFTER_SIGTERM_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=60)


class Workers:
    """The ingest workers one test started; all of them are reaped when it ends."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.started: list[Worker] = []

    def start(self, config: Settings, *args: str, **env: str) -> Worker:
        """`optout-sync ingest` as a separate process, as an operator would run it."""
        log_path = self.log_dir / f"worker-{len(self.started) + 1}.log"
        worker = Worker(config, log_path, args, env)
        self.started.append(worker)
        return worker

    def reap_all(self) -> None:
        for worker in self.started:
            worker.reap()


@pytest.fixture
def ingest_workers(tmp_path: Path) -> Iterator[Workers]:
    """Starts ingest workers for a test and reaps every one of them, pass or fail."""
    workers = Workers(tmp_path)
    try:
        yield workers
    finally:
        workers.reap_all()


def produce(config: Settings, messages: Iterable[tuple[bytes | None, bytes | None]]) -> int:
    """Sends (key, value) pairs to the inbound topic and waits until all are acknowledged."""
    sender = kafka_clients.producer(config)
    count = 0
    for key, value in messages:
        sender.send(config.topic_inbound, key=key, value=value)
        count += 1
    sender.flush(timeout=60)
    sender.close()
    return count


def keyed(changes: Iterable[ChangeV1]) -> list[tuple[bytes | None, bytes | None]]:
    return [(kafka_key(change), encode(change)) for change in changes]


def end_offsets(config: Settings, topic: str | None = None) -> dict[str, int]:
    """The last offset of each non-empty partition, as `<topic>:<partition>` -> offset."""
    topic = topic or config.topic_inbound
    reader = KafkaConsumer(bootstrap_servers=config.kafka_bootstrap_servers, group_id=None)
    try:
        partitions = [TopicPartition(topic, p) for p in reader.partitions_for_topic(topic) or ()]
        ends = reader.end_offsets(partitions)
    finally:
        reader.close()
    return {f"{tp.topic}:{tp.partition}": end - 1 for tp, end in ends.items() if end > 0}


def wait_for(
    condition: Callable[[], bool],
    timeout_s: float,
    what: str,
    context: Callable[[], str] = lambda: "",
) -> None:
    """Waits until `condition()` holds; fails naming what it waited for (and `context()`)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {timeout_s:.0f}s waiting for {what}\n{context()}"
            )
        time.sleep(0.05)


def caught_up(config: Settings, store: ChangeRecorder) -> Callable[[], bool]:
    """True once the store's positions reach the end of every inbound partition."""
    ends = end_offsets(config)
    return lambda: all(position >= ends[name] for name, position in store.positions(ends).items())


def reader(config: Settings) -> ChangeRecorder:
    return bootstrap.open_store(config)
