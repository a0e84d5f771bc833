"""Kafka in and out (kafka-python): the one place that builds clients and creates topics.

Values are taken as raw bytes: decoding happens in the ingest loop, because a raising
value_deserializer wedges its partition.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError

from adapters.settings import Settings

# Topics accept messages well past the contract's 1 MiB, so that an oversized message is
# delivered and dead-lettered with its reason instead of being refused to its producer.
TOPIC_MAX_MESSAGE_BYTES = 8 * 1024 * 1024
CLIENT_ID = "optout-sync"
# A broker back after an outage is found within this (kafka-python's default backs off to 30 s).
RECONNECT_BACKOFF_MAX_MS = 5_000


def admin(settings: Settings) -> KafkaAdminClient:
    return KafkaAdminClient(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        client_id=CLIENT_ID,
        request_timeout_ms=30_000,
        bootstrap_timeout_ms=int(settings.kafka_connect_timeout_s * 1000),
    )


def ensure_topics(settings: Settings, partitions: int = 4) -> None:
    """Creates the inbound and dead-letter topics when missing (idempotent)."""
    wanted = [settings.topic_inbound, settings.topic_dead_letter]
    client = admin(settings)
    try:
        existing = set(client.list_topics())
        missing = [name for name in wanted if name not in existing]
        if missing:
            with contextlib.suppress(TopicAlreadyExistsError):  # another process was first
                client.create_topics(
                    [
                        NewTopic(
                            name,
                            num_partitions=partitions,
                            replication_factor=1,
                            topic_configs={"max.message.bytes": str(TOPIC_MAX_MESSAGE_BYTES)},
                        )
                        for name in missing
                    ]
                )
    finally:
        client.close()


def producer(settings: Settings, **overrides: object) -> KafkaProducer:
    config: dict[str, object] = {
        "bootstrap_servers": settings.kafka_bootstrap_servers,
        "client_id": CLIENT_ID,
        "acks": "all",
        "linger_ms": 5,
        "batch_size": 256 * 1024,
        "max_request_size": TOPIC_MAX_MESSAGE_BYTES,
        # A send waits this long at most for metadata or buffer space (kafka-python: 60 s).
        "max_block_ms": 10_000,
        "reconnect_backoff_max_ms": RECONNECT_BACKOFF_MAX_MS,
    }
    config.update(overrides)
    return KafkaProducer(**config)


def consumer(settings: Settings, topics: Iterable[str] = (), **overrides: object) -> KafkaConsumer:
    """A consumer-group member with manual commits, returning raw bytes."""
    config: dict[str, object] = {
        "bootstrap_servers": settings.kafka_bootstrap_servers,
        "client_id": CLIENT_ID,
        "group_id": settings.consumer_group,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "max_partition_fetch_bytes": TOPIC_MAX_MESSAGE_BYTES,
        "fetch_max_bytes": 4 * TOPIC_MAX_MESSAGE_BYTES,
        "max_poll_records": 2000,
        "session_timeout_ms": 10_000,
        "heartbeat_interval_ms": 1_000,
        "reconnect_backoff_max_ms": RECONNECT_BACKOFF_MAX_MS,
    }
    if settings.group_instance_id:
        config["group_instance_id"] = settings.group_instance_id
    config.update(overrides)
    client = KafkaConsumer(**config)
    if topics:
        client.subscribe(list(topics))
    return client
