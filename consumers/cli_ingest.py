"""`optout-sync ingest`: the long-running ingest consumer."""

from __future__ import annotations

import logging

import click
import msgspec

from adapters.settings import ConfigError
from consumers import bootstrap, health
from consumers.ingest import GapError
from consumers.metrics import IngestMetrics
from consumers.stopping import idle_exit_option, stop_on_signals

log = logging.getLogger(__name__)


def _partition_name(
    ctx: click.Context, param: click.Parameter, values: tuple[str, ...]
) -> tuple[str, ...]:
    for value in values:
        topic, _, partition = value.rpartition(":")
        if not topic or not partition.isdigit():
            raise click.BadParameter(f"expected TOPIC:PARTITION, got {value!r}")
    return values


@click.command()
@idle_exit_option("without messages")
@click.option(
    "--accept-gap",
    "accept_gap",
    multiple=True,
    metavar="TOPIC:PARTITION",
    callback=_partition_name,
    help="Go on past messages of this partition that no longer exist in Kafka and were never "
    "stored (the gap is recorded in the event store). Repeatable.",
)
@click.option(
    "--accept-gaps", is_flag=True, help="Like --accept-gap, for every partition with a gap."
)
@click.option("--no-prepare", is_flag=True, help="Skip creating tables and topics.")
@click.option("--json", "as_json", is_flag=True, help="Print the run's counts as JSON on exit.")
def ingest(
    idle_exit: float | None,
    accept_gap: tuple[str, ...],
    accept_gaps: bool,
    no_prepare: bool,
    as_json: bool,
) -> None:
    """Consume inbound changes from Kafka into the event store, exactly once.

    Stops within seconds of SIGTERM or Ctrl-C (a second one exits at once)."""
    config = bootstrap.settings()
    if not no_prepare:
        bootstrap.prepare(config)
    with bootstrap.reachable(config):
        worker = bootstrap.ingest(
            config, accept_gaps=True if accept_gaps else frozenset(accept_gap)
        )
    stop_on_signals(worker.stop)
    try:
        with health.serving(config, [IngestMetrics(worker)], worker.not_ready):
            stats = worker.run(idle_exit_s=idle_exit)
    except (GapError, ConfigError) as error:
        raise click.ClickException(str(error)) from None
    if as_json:
        click.echo(msgspec.json.encode(stats.__dict__).decode())
    else:
        click.echo(
            f"stored {stats.recorded} changes, {stats.duplicates} already recorded, "
            f"{stats.dead_lettered} dead-lettered, {stats.redelivered} redelivered offsets skipped"
        )
