"""`optout-sync person`: one person's opt-out state and history."""

from __future__ import annotations

from datetime import UTC, datetime

import click
import msgspec
from eventsourcing.persistence import OperationalError, ProgrammingError
from rich.console import Console
from rich.table import Table

from consumers import bootstrap
from domain.identity import person_key
from projections.person_state import PersonState, state_of


def load_state(identity: str) -> PersonState | None:
    """The state of a person given by the sales tool's person id, or by email."""
    key = person_key(None, identity) if "@" in identity else person_key(identity, None)
    store = bootstrap.open_store(bootstrap.settings())
    try:
        person = store.person(key)
        return None if person is None else state_of(person, store.history(key))
    except (OperationalError, ProgrammingError) as error:
        raise click.ClickException(
            f"the event store cannot be read ({error}); has anything been ingested yet?"
        ) from None
    finally:
        store.close()


@click.command()
@click.argument("identity")
@click.option("--json", "as_json", is_flag=True, help="Print the state as JSON.")
def person(identity: str, as_json: bool) -> None:
    """Show the opt-out state of IDENTITY: a person id, or an email address."""
    state = load_state(identity)
    if state is None:
        raise click.ClickException("no such person in the event log")
    if as_json:
        click.echo(msgspec.json.encode(state).decode())
        return
    print_state(state)


def utc(moment: datetime, *, milliseconds: bool = False) -> str:
    """A date and time in UTC, marked `Z`, so rows from producers in any zone compare at a glance."""
    # eventsourcing stamps its events in UTC; a naive time is taken to be one of those.
    aware = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    shown = aware.astimezone(UTC).isoformat(
        sep=" ", timespec="milliseconds" if milliseconds else "seconds"
    )
    return shown.removesuffix("+00:00") + "Z"


def print_state(state: PersonState, console: Console | None = None) -> None:
    console = console or Console(width=None if Console().is_terminal else 120)
    status = "[bold red]opted out[/]" if state.opted_out else "[green]subscribed[/]"
    if state.pending_link:
        status += " [yellow](pending link: no Salesforce id yet)[/]"
    console.print(f"[bold]{state.person_key}[/]  {status}")
    if state.opted_out and state.opted_out_at:
        console.print(f"  since {utc(state.opted_out_at)} via {state.opted_out_source}")
    console.print(f"  Salesforce id: {state.salesforce_id or '-'}")
    table = Table()
    # Times never wrap: a date split from its time is easily misread.
    table.add_column("occurred", no_wrap=True)
    for heading in ("change", "source", "actor", "channel"):
        table.add_column(heading)
    table.add_column("recorded", no_wrap=True)
    for entry in state.history:
        table.add_row(
            utc(entry.occurred_at),
            entry.change,
            entry.source,
            entry.actor,
            entry.channel,
            utc(entry.recorded_at, milliseconds=True),
        )
    console.print(table)
