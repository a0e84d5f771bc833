"""`optout-sync ingest`: the long-running ingest consumer."""

from __future__ import annotations

import signal
from types import FrameType

import click
import msgspec

from consumers import bootstrap
from consumers.ingest import Ingest


@click.command()
@click.option(
    "--idle-exit",
    type=float,
    default=None,
    metavar="SECONDS",
    help="Exit after this long without messages (default: run until SIGTERM/SIGINT).",
)
@click.option("--no-prepare", is_flag=True, help="Skip creating tables and topics.")
@click.option("--json", "as_json", is_flag=True, help="Print the run's counts as JSON on exit.")
def ingest(idle_exit: float | None, no_prepare: bool, as_json: bool) -> None:
    """Consume inbound changes from Kafka into the event store, exactly once."""
    config = bootstrap.settings()
    if not no_prepare:
        bootstrap.prepare(config)
    with bootstrap.reachable(config):
        worker = Ingest(config, bootstrap.open_store(config, writer=True))

    def stop(signum: int, frame: FrameType | None) -> None:
        worker.stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    stats = worker.run(idle_exit_s=idle_exit)
    if as_json:
        click.echo(msgspec.json.encode(stats.__dict__).decode())
    else:
        click.echo(
            f"stored {stats.recorded} changes, {stats.duplicates} already recorded, "
            f"{stats.dead_lettered} dead-lettered, {stats.redelivered} redelivered offsets skipped"
        )
