"""`optout-sync status`: whether the engine keeps up, at a glance or for a program (`--json`).

Exit codes: 0 all is well; 1 something needs attention (the `attention` list says what);
2 status itself cannot be read (the broker or the store does not answer, or there is no store).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import unquote

import click
import msgspec
from eventsourcing.persistence import OperationalError, ProgrammingError
from rich.console import Console
from rich.table import Table

from consumers import bootstrap
from consumers.cli_person import utc
from consumers.read_models import read_models
from consumers.status import DEFAULT_MAX_LAG, Status, gather


class Unreadable(click.ClickException):
    """Status cannot be read at all: told apart from "needs attention" by its exit code."""

    exit_code = 2


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option(
    "--max-lag",
    type=click.IntRange(0),
    default=DEFAULT_MAX_LAG,
    show_default=True,
    help="Messages an inbound partition, or events the pusher or the feed, may be behind "
    "before status asks for attention.",
)
def status(as_json: bool, max_lag: int) -> None:
    """Whether the engine keeps up: inbound lag per partition, each read model's, the pusher's
    and the feed's position, pending links, pending and failed pushes, dead letters, Salesforce
    API calls used and left, the last and next nightly pass. Reads only (no Salesforce call).

    Exits 0 when all is well, 1 when something needs attention (listed), 2 when the broker or
    the store cannot be read."""
    config = bootstrap.settings()
    with _readable(config):
        _refuse_missing_store(config.database_url, config.store_location)
        store = bootstrap.open_store(config)
        try:
            models = read_models(store)
            try:
                found = gather(config, store, models, max_lag=max_lag)
            finally:
                models.close()
        finally:
            store.close()
    if as_json:
        click.echo(msgspec.json.encode(found).decode())
    else:
        show(found)
    if found.attention:
        raise SystemExit(1)


@contextmanager
def _readable(config: bootstrap.Settings) -> Iterator[None]:
    try:
        with bootstrap.reachable(config):
            try:
                yield
            except TimeoutError as error:  # a topic that stopped answering midway
                raise Unreadable(str(error)) from None
            except ProgrammingError as error:  # no tables: a store never initialised
                raise Unreadable(
                    f"OPTOUT_DATABASE_URL: the event store at {config.store_location} cannot be "
                    f"read ({error}); run `optout-sync init`"
                ) from None
    except click.ClickException as error:
        if isinstance(error, Unreadable):
            raise
        raise Unreadable(error.format_message()) from None
    except OperationalError as error:  # raised past `reachable` only when not a connection's
        raise Unreadable(f"OPTOUT_DATABASE_URL: the event store cannot be read ({error})") from None


def _refuse_missing_store(url: str, location: str) -> None:
    """A SQLite store that does not exist would be created by opening it: status writes nothing."""
    if url.startswith("sqlite:///") and not Path(unquote(url[len("sqlite:///") :])).exists():
        raise Unreadable(
            f"OPTOUT_DATABASE_URL: no event store at {location}; run `optout-sync init`"
        )


def show(found: Status) -> None:
    console = Console(width=None if Console().is_terminal else 120)
    inbound = found.inbound
    table = Table(title=f"inbound {inbound.topic}: {inbound.lag} messages not ingested")
    for heading in ("partition", "end offset", "stored up to", "lag", "gap"):
        table.add_column(heading)
    for p in inbound.partitions:
        stored = "-" if p.stored is None else str(p.stored)
        table.add_row(str(p.partition), str(p.end), stored, str(p.lag), "yes" if p.gap else "")
    console.print(table if inbound.exists else f"[red]inbound topic {inbound.topic} is missing[/]")
    table = Table(title=f"followers of the event log (head {found.log_head})")
    for heading in ("follower", "kind", "position", "lag"):
        table.add_column(heading)
    for follower in found.followers:
        position = "never run" if follower.position is None else str(follower.position)
        table.add_row(follower.name, follower.kind, position, str(follower.lag))
    console.print(table)
    persons, letters, calls = found.persons, found.dead_letters, found.api_calls
    console.print(
        f"pending links {persons.pending_links}  pending pushes {persons.pending_pushes}  "
        f"failed pushes {persons.failed_pushes}"
    )
    console.print(f"dead letters {letters.total} ({letters.not_redriven} not re-driven)")
    limit = (
        f"limit unknown ({calls.budget} of the org's daily maximum, which status does not ask)"
        if calls.limit is None
        else f"{calls.left} left of {calls.limit}"
    )
    console.print(
        f"Salesforce API calls, last {calls.window_hours} h: {calls.used} by the pusher, {limit}; "
        f"{calls.nightly_used} by nightly passes"
    )
    night = found.nightly
    last = night.last
    shown_last = (
        f"{last.slot} {last.outcome} at {utc(last.finished_at)}"
        + (f": {last.error}" if last.error else "")
        if last
        else "none"
    )
    shown_next = utc(night.next_at) if night.next_at else "disabled (OPTOUT_NIGHTLY_SYNC is off)"
    if night.overdue_slot:
        shown_next += f"; slot {night.overdue_slot} is due and not done"
    console.print(f"nightly pass: last {shown_last}; next {shown_next}")
    if found.attention:
        console.print("[bold red]needs attention:[/]")
        for reason in found.attention:
            console.print(f"  - {reason}")
    else:
        console.print("[green]all is well[/]")
