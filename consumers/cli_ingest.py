"""`optout-sync ingest`: the long-running ingest consumer."""

from __future__ import annotations

import logging
import os
import signal
import threading
from types import FrameType

import click
import msgspec

from consumers import bootstrap
from consumers.cli import KAFKA_LOG_FILTER
from consumers.ingest import GapError, Ingest

log = logging.getLogger(__name__)

# After the first SIGTERM/SIGINT the worker stores what it safely can and closes its clients;
# whatever still blocks then (a paused broker or database) does not hold the exit past this.
# Exiting at any instant is safe: a slice's changes and position are one transaction.
STOP_DEADLINE_S = 12.0


def _partition_name(
    ctx: click.Context, param: click.Parameter, values: tuple[str, ...]
) -> tuple[str, ...]:
    for value in values:
        topic, _, partition = value.rpartition(":")
        if not topic or not partition.isdigit():
            raise click.BadParameter(f"expected TOPIC:PARTITION, got {value!r}")
    return values


@click.command()
@click.option(
    "--idle-exit",
    type=float,
    default=None,
    metavar="SECONDS",
    help="Exit after this long without messages (default: run until SIGTERM/SIGINT).",
)
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
    _stop_on_signals(worker)
    try:
        stats = worker.run(idle_exit_s=idle_exit)
    except GapError as error:
        raise click.ClickException(str(error)) from None
    if as_json:
        click.echo(msgspec.json.encode(stats.__dict__).decode())
    else:
        click.echo(
            f"stored {stats.recorded} changes, {stats.duplicates} already recorded, "
            f"{stats.dead_lettered} dead-lettered, {stats.redelivered} redelivered offsets skipped"
        )


def _stop_on_signals(worker: Ingest) -> None:
    """First SIGTERM/SIGINT: stop, with a deadline; a second one: exit now."""
    stopping = threading.Event()

    def stop(signum: int, frame: FrameType | None) -> None:
        code = 128 + signum
        if stopping.is_set():
            log.warning("second %s: exiting now", signal.Signals(signum).name)
            os._exit(code)
        stopping.set()
        KAFKA_LOG_FILTER.stopping = True  # its complaints about the closing connections
        log.warning("%s: stopping", signal.Signals(signum).name)
        worker.stop()
        threading.Thread(
            target=_exit_after, args=(code,), name="stop-deadline", daemon=True
        ).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)


def _exit_after(code: int) -> None:
    threading.Event().wait(STOP_DEADLINE_S)
    log.warning(
        "not stopped %.0f s after the signal (a broker or store not answering); exiting anyway",
        STOP_DEADLINE_S,
    )
    logging.shutdown()
    os._exit(code)
