"""Kafka in and out (kafka-python): the one place that builds clients and creates topics.

Values are taken as raw bytes: decoding happens in the ingest loop, because a raising
value_deserializer wedges its partition.
"""

from __future__ import annotations

from collections.abc import Iterable

import msgspec
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, errors
from kafka.admin import ConfigResource, ConfigResourceType

from adapters.settings import ConfigError, Settings

# Topics accept messages well past the contract's 1 MiB, so that an oversized message is
# delivered and dead-lettered with its reason instead of being refused to its producer.
TOPIC_MAX_MESSAGE_BYTES = 8 * 1024 * 1024
CLIENT_ID = "optout-sync"
# Dead letters stay until an operator deletes them (kafka-delete-records.sh), never by age or size.
KEEP_UNTIL_DELETED = {"retention.ms": "-1", "retention.bytes": "-1"}
# The setting behind each topic config `init` checks; the others are fixed by the engine.
_CONFIG_SETTING = {
    "min.insync.replicas": "OPTOUT_TOPIC_MIN_INSYNC_REPLICAS",
    "retention.ms": "OPTOUT_TOPIC_RETENTION",
}
_CREATE_ERROR_SETTING: dict[type[errors.KafkaError], str] = {
    errors.InvalidReplicationFactorError: "OPTOUT_TOPIC_REPLICATION_FACTOR",
    errors.InvalidPartitionsError: "OPTOUT_TOPIC_PARTITIONS",
    errors.InvalidConfigurationError: "OPTOUT_TOPIC_MIN_INSYNC_REPLICAS / OPTOUT_TOPIC_RETENTION",
}
# A broker back after an outage is found within this (kafka-python's default backs off to 30 s).
RECONNECT_BACKOFF_MAX_MS = 5_000


def admin(settings: Settings) -> KafkaAdminClient:
    return KafkaAdminClient(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        client_id=CLIENT_ID,
        request_timeout_ms=30_000,
        bootstrap_timeout_ms=int(settings.kafka_connect_timeout_s * 1000),
    )


class TopicMismatch(ConfigError):
    """An existing topic differs from what the settings say; the message names each setting."""


class TopicSpec(msgspec.Struct, frozen=True, kw_only=True):
    """A topic as the engine creates it, and what it requires of one that already exists."""

    name: str
    partitions: int
    replication_factor: int
    configs: dict[str, str]  # an existing topic that differs is refused
    # Set on an existing topic that differs: only for changes that never lose data.
    enforced: dict[str, str] = {}
    # The dead-letter topic's partition count does not matter: letters are read all together.
    partitions_matter: bool = True


def topic_specs(settings: Settings) -> list[TopicSpec]:
    """The inbound, dead-letter, redrive-receipt and analytics-feed topics (the one place that
    shapes them)."""
    insync = {"min.insync.replicas": str(settings.topic_min_insync_replicas)}
    large = {"max.message.bytes": str(TOPIC_MAX_MESSAGE_BYTES)}
    return [
        TopicSpec(
            name=settings.topic_inbound,
            partitions=settings.topic_partitions,
            replication_factor=settings.topic_replication_factor,
            configs={**insync, "retention.ms": str(settings.topic_retention_ms)},
            enforced=large,
        ),
        TopicSpec(
            name=settings.topic_dead_letter,
            partitions=settings.topic_partitions,
            replication_factor=settings.topic_replication_factor,
            configs=insync,
            enforced={**large, **KEEP_UNTIL_DELETED},
            partitions_matter=False,
        ),
        # Small: one record per re-driven letter, the latest kept (compacted), never expired.
        TopicSpec(
            name=settings.topic_redrives,
            partitions=1,
            replication_factor=settings.topic_replication_factor,
            configs=insync,
            enforced={"cleanup.policy": "compact"},
            partitions_matter=False,
        ),
        # The analytics feed: a consumer that starts late reads every state change there was.
        TopicSpec(
            name=settings.topic_state,
            partitions=settings.topic_partitions,
            replication_factor=settings.topic_replication_factor,
            configs=insync,
            enforced=KEEP_UNTIL_DELETED,
            partitions_matter=False,
        ),
    ]


def ensure_topics(settings: Settings) -> list[str]:
    """Creates the engine's topics when missing, checks them when present.

    Returns what was changed (for the operator); raises TopicMismatch naming the settings an
    existing topic contradicts. The engine's own configs (message size, the dead letters kept
    until deleted) are set on an existing topic that lacks them: that only ever keeps more.
    """
    specs = topic_specs(settings)
    client = admin(settings)
    try:
        existing = set(client.list_topics())
        missing = [spec for spec in specs if spec.name not in existing]
        created = _create(client, missing) if missing else set()
        changes = [f"created topic {name}" for name in sorted(created)]
        present = [spec for spec in specs if spec.name not in created]
        if present:
            # A topic another process has only just created is checked once its metadata is complete.
            client.wait_for_topics([spec.name for spec in present], timeout_ms=30_000)
            changes += _check(client, present)
        return changes
    finally:
        client.close()


def _create(client: KafkaAdminClient, specs: list[TopicSpec]) -> set[str]:
    """Creates the topics; returns the names created (another process may have been first)."""
    answer = client.create_topics(
        {
            spec.name: {
                "num_partitions": spec.partitions,
                "replication_factor": spec.replication_factor,
                "configs": {**spec.configs, **spec.enforced},
            }
            for spec in specs
        },
        raise_errors=False,
    )
    created = set()
    for topic in answer["topics"]:
        error = errors.for_code(topic["error_code"])
        if error is errors.NoError:
            created.add(topic["name"])
        elif error is not errors.TopicAlreadyExistsError:
            setting = _CREATE_ERROR_SETTING.get(error, "KAFKA_BOOTSTRAP_SERVERS")
            raise ConfigError(
                f"{setting}: the cluster refused to create topic {topic['name']}: "
                f"{topic['error_message'] or error.__name__}"
            )
    return created


def _check(client: KafkaAdminClient, specs: list[TopicSpec]) -> list[str]:
    """Compares existing topics with their specs; returns the fixes made, raises on mismatches."""
    described = {topic["name"]: topic for topic in client.describe_topics([s.name for s in specs])}
    configs = client.describe_configs(
        [
            ConfigResource(ConfigResourceType.TOPIC, s.name, dict.fromkeys(s.configs | s.enforced))
            for s in specs
        ],
        config_filter="all",
    )["topic"]
    problems: list[str] = []
    fixes: dict[str, dict[str, str]] = {}
    for spec in specs:
        partitions = described[spec.name]["partitions"]
        if spec.partitions_matter and len(partitions) != spec.partitions:
            problems.append(
                f"OPTOUT_TOPIC_PARTITIONS: topic {spec.name} has {len(partitions)} partitions, "
                f"the setting says {spec.partitions}"
            )
        replicas = {len(partition["replica_nodes"]) for partition in partitions}
        if replicas != {spec.replication_factor}:
            problems.append(
                f"OPTOUT_TOPIC_REPLICATION_FACTOR: topic {spec.name} has replication factor "
                f"{'/'.join(map(str, sorted(replicas)))}, the setting says {spec.replication_factor}"
            )
        actual = {name: entry["value"] for name, entry in configs[spec.name].items()}
        problems += [
            f"{_CONFIG_SETTING[name]}: topic {spec.name} has {name}={actual.get(name)}, "
            f"the setting says {wanted}"
            for name, wanted in spec.configs.items()
            if actual.get(name) != wanted
        ]
        unmet = {
            name: wanted
            for name, wanted in spec.enforced.items()
            if not _satisfied(name, actual.get(name), wanted)
        }
        if unmet:
            fixes[spec.name] = unmet
    if problems:
        raise TopicMismatch(
            "existing topics do not match the settings (set them as the topics are, or alter "
            "the topics with kafka-topics.sh / kafka-configs.sh):\n  " + "\n  ".join(problems)
        )
    return _enforce(client, fixes)


def _satisfied(name: str, have: str | None, wanted: str) -> bool:
    if name == "max.message.bytes" and have is not None:
        return int(have) >= int(wanted)
    return have == wanted


def _enforce(client: KafkaAdminClient, fixes: dict[str, dict[str, str]]) -> list[str]:
    """Sets the engine's own configs on existing topics (each keeps or accepts more, never less)."""
    if not fixes:
        return []
    answer = client.alter_configs(
        [ConfigResource(ConfigResourceType.TOPIC, name, wanted) for name, wanted in fixes.items()]
    )
    for name, result in answer.get("topic", {}).items():
        if result != "OK":
            raise ConfigError(
                f"KAFKA_BOOTSTRAP_SERVERS: the cluster refused to set "
                f"{', '.join(fixes[name])} on topic {name}: {result}"
            )
    return [
        f"topic {name}: set {', '.join(f'{key}={value}' for key, value in wanted.items())}"
        for name, wanted in fixes.items()
    ]


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
        # Larger slices, fewer commits: a slice is what one fetch holds of a partition, up to this
        # (bench/ingest.py; docs/performance.md "Session 7").
        "max_poll_records": 20_000,
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
