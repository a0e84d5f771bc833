"""The composition root: settings, store and topics wired once for every entry point."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import click
from eventsourcing.persistence import InterfaceError, OperationalError
from kafka import KafkaProducer
from kafka.errors import KafkaError

from adapters import event_store, kafka_clients, salesforce, salesforce_client
from adapters.process_lock import ProcessLock
from adapters.salesforce_client import Credentials
from adapters.settings import ConfigError, Settings, load
from consumers import logs
from consumers.ingest import Ingest
from consumers.publisher import Publisher, transactional_id
from consumers.pusher import Pusher
from consumers.read_models import read_models
from domain.application import ChangeRecorder
from domain.identity import person_key
from domain.opt_out_field import live_push_field
from domain.push import spent_calls

if TYPE_CHECKING:
    from consumers.nightly import NightlyRun
    from devservices import ServiceStatus


def settings() -> Settings:
    """Settings, or a clean exit naming the bad setting."""
    try:
        config = load()
    except ConfigError as error:
        raise click.ClickException(f"configuration: {error}") from None
    logs.hide_settings(config)
    return config


def uses_local_kafka() -> bool:
    return not os.environ.get("KAFKA_BOOTSTRAP_SERVERS")


def ensure_local_kafka() -> ServiceStatus | None:
    """Starts the project's own broker when no cluster was configured, or reuses the one running
    (from an earlier demo or `services up`); None when KAFKA_BOOTSTRAP_SERVERS names a cluster."""
    if not uses_local_kafka():
        return None
    from devservices import ServiceError
    from devservices import broker as local_kafka
    from devservices.settings import SettingError
    from devservices.settings import load as load_services

    try:
        config = load_services()
    except SettingError as error:
        raise click.ClickException(f"configuration: {error}") from None

    current = local_kafka.status(config)
    if current.state == "running":
        logs.say(
            f"using the local Kafka broker already running (pid {current.pid}, {current.endpoint})"
        )
        return current
    if current.state == "stale":
        logs.say(
            f"the local Kafka broker's pid file ({local_kafka.paths(config).pid}) names a process "
            "that is gone; starting a new broker"
        )
    logs.say("starting the local Kafka broker (first start downloads its jars)...")
    try:
        return local_kafka.up(config)
    except ServiceError as error:
        raise click.ClickException(f"the local Kafka broker could not start: {error}") from None


def prepare(config: Settings) -> list[str]:
    """Creates the event store's tables and the topics, once; workers then start without.

    Existing topics must match the settings (else a clean exit naming them); what was changed
    is said on stderr and returned.
    """
    with reachable(config):
        try:
            create_tables(config.database_url)
        except Exception as error:  # a concurrent creator can race on PostgreSQL's catalog
            if "already exists" not in str(error) and "duplicate key" not in str(error):
                raise
        try:
            changes = kafka_clients.ensure_topics(config)
        except ConfigError as error:
            raise click.ClickException(f"configuration: {error}") from None
    for change in changes:
        logs.say(change)
    return changes


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


def key_of(config: Settings, identity: str) -> str:
    """The key a command-line IDENTITY names: an email's address key, else a person id's key."""
    if "@" in identity:
        return event_store.address_keys(config).key_of(identity)
    return person_key(identity)


def create_tables(database_url: str) -> None:
    """Creates the event store's tables (and the index beside them) if missing (idempotent)."""
    store = ChangeRecorder(env=event_store.environment(database_url, create_table=True))
    try:
        models = read_models(store)
        for projector in models.projectors.values():
            projector.ensure()  # the read models' tables, empty: `projections run` fills them
        models.close()
    finally:
        store.close()


def open_store(config: Settings, *, writer: bool = False) -> ChangeRecorder:
    """The application service on the configured store; a writer keeps a trusted cache."""
    return ChangeRecorder(env=event_store.environment(config.database_url, writer=writer))


def ingest(config: Settings, *, accept_gaps: bool | Collection[str] = ()) -> Ingest:
    """One ingest worker, wired: its store, its Kafka clients, the address key."""
    return Ingest(
        config,
        open_store(config, writer=True),
        consumer=kafka_clients.consumer(config),
        # Dead letters may carry values up to the topic's limit: compress them on the way out.
        producer=kafka_clients.producer(config, compression_type="gzip"),
        keys=event_store.address_keys(config),
        accept_gaps=accept_gaps,
    )


def pusher(config: Settings, org: salesforce.SalesforceOrg | None = None) -> Pusher:
    """The live pusher, wired: its store, the org (logged in now), the field it writes (found
    now; when it is missing the pusher writes nothing and says why in each owed person's
    history: `pusher.field_missing`)."""
    if org is None:
        Credentials.from_settings(config)  # no org configured: said before the store is opened
    store = open_store(config)
    try:
        # The calls of the last 24 hours count against the daily budget after a restart too.
        org = org or salesforce.connect(config, already_spent=spent_calls(store, time.time()))
        field = live_push_field(config.nightly_sync, config.opt_out_field)
        try:
            target = org.find_opt_out_field(field, config.marketo_field_name)
        except salesforce.FieldMissing as missing:
            pusher = Pusher(store, org, None, field_missing=str(missing))
        else:
            pusher = Pusher(store, org, target)
    except BaseException:
        store.close()
        raise
    pusher.email_scope, pusher.resolve_by_email = config.email_scope, config.resolve_by_email
    return pusher


def publisher(config: Settings) -> Publisher:
    """The analytics feed's publisher, wired: its store, and a way to make a transactional
    producer that has fenced any earlier publisher of the topic."""

    def connect() -> KafkaProducer:
        producer = kafka_clients.producer(
            config,
            transactional_id=transactional_id(config),
            enable_idempotence=True,
            transaction_timeout_ms=60_000,
        )
        producer.init_transactions()
        return producer

    return Publisher(config, open_store(config), connect)


def pusher_lock(config: Settings) -> ProcessLock:
    """The lock that keeps one pusher active per store."""
    return ProcessLock(config.database_url, "pusher")


def nightly(config: Settings, progress: Callable[[str], None] | None = None) -> NightlyRun:
    """The nightly pass, wired: its store, the org (logged in now), the address key."""
    from consumers.nightly import NightlyRun

    client = salesforce_client.connect_client(config)
    return NightlyRun(
        store=open_store(config),
        org=salesforce.SalesforceOrg(client),
        client=client,
        config=config,
        keys=event_store.address_keys(config),
        progress=progress or (lambda _: None),
    )


def nightly_lock(config: Settings) -> ProcessLock:
    """The lock that keeps one nightly pass running per store."""
    return ProcessLock(config.database_url, "nightly")
