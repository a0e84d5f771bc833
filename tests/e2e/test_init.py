"""`optout-sync init` makes the topics as the OPTOUT_TOPIC_* settings say, and refuses existing
topics that contradict them, naming the setting; dead letters are kept until deleted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from kafka import KafkaAdminClient
from kafka.admin import ConfigResource, ConfigResourceType

from tests.e2e.cli import isolated_env, optout_sync

pytestmark = [pytest.mark.kafka]
WEEK_MS = str(7 * 24 * 3600 * 1000)


def _topic(bootstrap: str, name: str) -> tuple[int, dict[str, str]]:
    """(partition count, effective configs) of a topic, as the broker reports them."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        [described] = admin.describe_topics([name])
        configs = admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, name)], config_filter="all"
        )["topic"][name]
    finally:
        admin.close()
    return len(described["partitions"]), {key: entry["value"] for key, entry in configs.items()}


def test_init_makes_the_topics_as_the_settings_say(kafka_bootstrap: str, tmp_path: Path) -> None:
    env = isolated_env(
        kafka_bootstrap, tmp_path, OPTOUT_TOPIC_PARTITIONS="3", OPTOUT_TOPIC_RETENTION="2d"
    )
    first = optout_sync("init", "--json", env=env)
    assert first.returncode == 0, first.stderr
    answer = json.loads(first.stdout)
    assert answer["partitions"] == 3 and answer["inbound_retention_ms"] == 172_800_000
    inbound, dead_letters, redrives, feed = answer["topics"]

    partitions, configs = _topic(kafka_bootstrap, inbound)
    assert partitions == 3
    assert (configs["retention.ms"], configs["min.insync.replicas"]) == ("172800000", "1")
    partitions, configs = _topic(kafka_bootstrap, dead_letters)
    assert (configs["retention.ms"], configs["retention.bytes"]) == ("-1", "-1")
    assert configs["max.message.bytes"] == str(8 * 1024 * 1024)
    partitions, configs = _topic(kafka_bootstrap, redrives)
    assert (partitions, configs["cleanup.policy"]) == (1, "compact")
    partitions, configs = _topic(kafka_bootstrap, feed)
    assert (partitions, configs["retention.ms"], configs["retention.bytes"]) == (3, "-1", "-1")

    again = optout_sync("init", "--json", env=env)
    assert again.returncode == 0 and json.loads(again.stdout)["changes"] == []


def test_init_refuses_a_topic_with_another_partition_count_and_names_the_setting(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    env = isolated_env(kafka_bootstrap, tmp_path)
    made = optout_sync("init", env=env)
    assert made.returncode == 0 and "4 partitions" in made.stdout, made.stderr

    refused = optout_sync("init", env={**env, "OPTOUT_TOPIC_PARTITIONS": "6"})
    assert refused.returncode == 1
    assert "OPTOUT_TOPIC_PARTITIONS: topic e2e.changes." in refused.stderr
    assert "has 4 partitions, the setting says 6" in refused.stderr
    assert "Traceback" not in refused.stderr

    # A worker that would prepare the topics stops the same way, and so does a retention change.
    worker = optout_sync("ingest", "--idle-exit", "1", env={**env, "OPTOUT_TOPIC_PARTITIONS": "6"})
    assert worker.returncode == 1 and "OPTOUT_TOPIC_PARTITIONS" in worker.stderr
    shorter = optout_sync("init", env={**env, "OPTOUT_TOPIC_RETENTION": "1d"})
    assert shorter.returncode == 1
    assert f"OPTOUT_TOPIC_RETENTION: topic {env['OPTOUT_TOPIC_INBOUND']} has " in shorter.stderr
    assert f"retention.ms={WEEK_MS}, the setting says 86400000" in shorter.stderr

    # Refusing changed nothing.
    partitions, configs = _topic(kafka_bootstrap, env["OPTOUT_TOPIC_INBOUND"])
    assert (partitions, configs["retention.ms"]) == (4, WEEK_MS)


def test_a_dead_letter_topic_made_with_a_time_limit_is_set_to_keep_its_letters(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    env = isolated_env(kafka_bootstrap, tmp_path)
    dead_letters = f"{env['OPTOUT_TOPIC_INBOUND']}.dead-letter"
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    try:  # as earlier versions made it: the broker's 7 days
        admin.create_topics(
            {dead_letters: {"num_partitions": 4, "replication_factor": 1}},
            wait_for_metadata=True,
        )
    finally:
        admin.close()
    assert _topic(kafka_bootstrap, dead_letters)[1]["retention.ms"] == WEEK_MS

    result = optout_sync("init", env=env)
    assert result.returncode == 0, result.stderr
    assert f"topic {dead_letters}: set " in result.stderr and "retention.ms=-1" in result.stderr
    configs = _topic(kafka_bootstrap, dead_letters)[1]
    assert (configs["retention.ms"], configs["retention.bytes"]) == ("-1", "-1")
    assert configs["max.message.bytes"] == str(8 * 1024 * 1024)
