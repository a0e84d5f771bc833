"""The composition root: settings, store and topics wired once for every entry point."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import click
from eventsourcing.persistence import InterfaceError, OperationalError
from kafka.errors import KafkaError

from adapters import event_store, kafka
from adapters.settings import ConfigError, Settings, load
from domain.application import OptOutLog


def settings() -> Settings:
    """Settings, or a clean exit naming the bad setting."""
    try:
        return load()
    except ConfigError as error:
        raise click.ClickException(f"configuration: {error}") from None


def uses_local_kafka() -> bool:
    return not os.environ.get("KAFKA_BOOTSTRAP_SERVERS")


def ensure_local_kafka(config: Settings) -> None:
    """Starts the project's own broker when no cluster was configured (idempotent)."""
    if not uses_local_kafka():
        return
    from adapters.local_services import kafka as local_kafka

    if local_kafka.status(config).state != "running":
        click.echo("starting the local Kafka broker (first start downloads its jars)...", err=True)
        local_kafka.up(config)


def prepare(config: Settings) -> None:
    """Creates the event store's tables and the topics, once; workers then start without."""
    with reachable(config):
        try:
            event_store.create_tables(config.database_url)
        except Exception as error:  # a concurrent creator can race on PostgreSQL's catalog
            if "already exists" not in str(error) and "duplicate key" not in str(error):
                raise
        kafka.ensure_topics(config)


@contextmanager
def reachable(config: Settings) -> Iterator[None]:
    """Turns "cannot reach Kafka / the store" into a clean exit naming the setting to check."""
    try:
        yield
    except KafkaError as error:
        raise click.ClickException(
            f"KAFKA_BOOTSTRAP_SERVERS: no Kafka broker answers at "
            f"{config.kafka_bootstrap_servers} ({type(error).__name__})"
        ) from None
    except (OperationalError, InterfaceError) as error:
        raise click.ClickException(
            f"OPTOUT_DATABASE_URL: cannot open the event store at {config.store_location} ({error})"
        ) from None


def open_store(config: Settings, *, writer: bool = False) -> OptOutLog:
    return event_store.open_log(config, writer=writer)
