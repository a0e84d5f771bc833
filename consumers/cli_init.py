"""`optout-sync init`: create the event store's tables and the topics, once."""

from __future__ import annotations

import click
import msgspec

from consumers import bootstrap


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print what was prepared as JSON.")
def init(as_json: bool) -> None:
    """Create the event store's tables and the Kafka topics (idempotent)."""
    config = bootstrap.settings()
    bootstrap.prepare(config)
    prepared = {
        "store": config.store_location,
        "topics": [config.topic_inbound, config.topic_dead_letter],
    }
    if as_json:
        click.echo(msgspec.json.encode(prepared).decode())
    else:
        click.echo(f"ready: store {prepared['store']}, topics {', '.join(prepared['topics'])}")
