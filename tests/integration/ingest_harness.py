"""Helpers for the ingest tests: isolated topics and groups per test, producing, waiting."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path

from kafka import KafkaConsumer, TopicPartition

from adapters import kafka_clients
from adapters.event_store import open_log
from adapters.inbound import ChangeV1, encode, kafka_key
from adapters.settings import Settings, load
from consumers import bootstrap
from domain.application import OptOutLog

REPO = Path(__file__).resolve().parents[2]


def isolated_settings(bootstrap_servers: str, database_url: str, state_dir: Path) -> Settings:
    """Settings with a topic pair and consumer group of its own, tables and topics created."""
    suffix = uuid.uuid4().hex[:10]
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap_servers,
        "OPTOUT_DATABASE_URL": database_url,
        "OPTOUT_STATE_DIR": str(state_dir),
        "OPTOUT_TOPIC_INBOUND": f"test.changes.{suffix}",
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
        "OPTOUT_CONSUMER_GROUP": config.consumer_group,
        **extra,
    }


def start_ingest(config: Settings, **extra_env: str) -> subprocess.Popen[bytes]:
    """`optout-sync ingest` as a separate process, as an operator would run it."""
    return subprocess.Popen(
        [sys.executable, "-m", "consumers", "ingest", "--no-prepare"],
        cwd=REPO,
        env=env_of(config, **extra_env),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


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


def wait_for(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}")
        time.sleep(0.05)


def caught_up(config: Settings, store: OptOutLog) -> Callable[[], bool]:
    """True once the store's positions reach the end of every inbound partition."""
    ends = end_offsets(config)
    return lambda: all(position >= ends[name] for name, position in store.positions(ends).items())


def reader(config: Settings) -> OptOutLog:
    return open_log(config)
