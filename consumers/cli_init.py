"""`optout-sync init`: create the event store's tables and the topics, once."""

from __future__ import annotations

import click
import msgspec

from adapters import kafka_clients
from consumers import bootstrap


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print what was prepared as JSON.")
def init(as_json: bool) -> None:
    """Create the event store's tables and the Kafka topics (idempotent).

    Existing topics are checked against OPTOUT_TOPIC_* (partitions, replication factor,
    min.insync.replicas, retention): a mismatch stops with the settings it contradicts.
    """
    config = bootstrap.settings()
    changes = bootstrap.prepare(config)
    topics = [spec.name for spec in kafka_clients.topic_specs(config)]
    shape = (
        f"{config.topic_partitions} partitions, replication factor "
        f"{config.topic_replication_factor}, min.insync.replicas {config.topic_min_insync_replicas}"
    )
    if as_json:
        prepared = {
            "store": config.store_location,
            "topics": topics,
            "partitions": config.topic_partitions,
            "replication_factor": config.topic_replication_factor,
            "min_insync_replicas": config.topic_min_insync_replicas,
            "inbound_retention_ms": config.topic_retention_ms,
            "changes": changes,
        }
        click.echo(msgspec.json.encode(prepared).decode())
    else:
        click.echo(f"ready: store {config.store_location}, topics {', '.join(topics)} ({shape})")
