"""`optout-sync projections run | rebuild | status`: the read models (per-person state, mailbox
index, audit trail) kept up with the event log, rebuilt beside the live copy, and watched.

None of these touches Salesforce or Kafka: they read the event log and write their own tables.
"""

from __future__ import annotations

import logging
import time

import click
import msgspec
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from adapters.settings import ConfigError
from consumers import health
from consumers.cli_person import reading
from consumers.metrics import ProjectionMetrics
from consumers.read_models import MODELS, read_models
from consumers.stopping import idle_exit_option, stop_on_signals
from projections.views import Status, follow, rebuild_together

log = logging.getLogger(__name__)


@click.group()
def projections() -> None:
    """The read models: per-person state, the mailbox index and the audit trail."""


@projections.command()
@idle_exit_option("with nothing new in the log")
@click.option("--json", "as_json", is_flag=True, help="Print each one's position on exit as JSON.")
def run(idle_exit: float | None, as_json: bool) -> None:
    """Keep every read model up with the event log, from where each stopped. Waits for news
    without polling on PostgreSQL (LISTEN); polls briefly on SQLite. Stops at SIGTERM/Ctrl-C."""
    with reading() as (store, config):
        models = read_models(store)
        stop_on_signals(models.follower.stop)
        try:
            with health.serving(config, [ProjectionMetrics(models)], models.not_ready):
                follow(list(models.projectors.values()), models.follower, idle_exit_s=idle_exit)
            models.follower.stopping.clear()
            statuses = [p.status() for p in models.projectors.values()]
        except ConfigError as error:  # OPTOUT_METRICS_PORT cannot be served
            raise click.ClickException(str(error)) from None
        finally:
            models.close()
    _print_statuses(statuses, as_json)


@projections.command()
@click.argument("name", required=False, type=click.Choice(sorted(MODELS)))
@click.option("--all", "every", is_flag=True, help="Rebuild every read model.")
@click.option("--json", "as_json", is_flag=True, help="Print what was rebuilt as JSON.")
def rebuild(name: str | None, every: bool, as_json: bool) -> None:
    """Rebuild NAME (or --all) from the whole event log: a fresh copy is built beside the live
    one, which readers keep using, and replaces it atomically once caught up. Writes nothing to
    Salesforce or Kafka."""
    if (name is None) == (not every):
        raise click.UsageError("name one read model, or --all")
    names = sorted(MODELS) if every else [str(name)]
    done = []
    with reading() as (store, _):
        models = read_models(store)
        stop_on_signals(models.follower.stop)
        projectors = [models.projectors[model] for model in names]
        try:
            started = time.monotonic()
            with _progress(as_json) as progress:
                task = progress.add_task(" + ".join(names), total=None)

                def show(at: int, head: int) -> None:
                    progress.update(task, completed=at, total=head)

                try:
                    # One pass over the log for all of them: each page read and decoded once.
                    generations = rebuild_together(projectors, progress=show)
                except InterruptedError as stopped:
                    raise click.ClickException(str(stopped)) from None
            elapsed = time.monotonic() - started
            for projector in projectors:
                done.append(
                    {
                        "name": projector.model.name,
                        "generation": generations[projector.model.name],
                        "position": projector.status().position,
                        "seconds": round(elapsed, 3),
                    }
                )
        finally:
            models.close()
    if as_json:
        click.echo(msgspec.json.encode(done).decode())
        return
    for rebuilt in done:
        click.echo(
            f"{rebuilt['name']}: generation {rebuilt['generation']} live at position "
            f"{rebuilt['position']} ({rebuilt['seconds']} s)"
        )


@projections.command()
@click.option("--json", "as_json", is_flag=True, help="Print each one's state as JSON.")
def status(as_json: bool) -> None:
    """Each read model's live generation, position, and lag behind the event log."""
    with reading() as (store, _):
        models = read_models(store)
        try:
            statuses = [p.status() for p in models.projectors.values()]
        finally:
            models.close()
    _print_statuses(statuses, as_json)


def _print_statuses(statuses: list[Status], as_json: bool) -> None:
    if as_json:
        click.echo(msgspec.json.encode(statuses).decode())
        return
    table = Table()
    for heading in ("read model", "generation", "position", "log head", "lag"):
        table.add_column(heading)
    for found in statuses:
        generation = "never built" if found.generation is None else str(found.generation)
        table.add_row(found.name, generation, str(found.position), str(found.head), str(found.lag))
    Console(width=None if Console().is_terminal else 120).print(table)


def _progress(quiet: bool) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        disable=quiet,
    )
