"""`optout-sync person`: the opt-out answer and history of a person, or of an email address and
every person that carries it, read from the read models (caught up with the log first, so the
answer is never stale)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

import click
import msgspec
from eventsourcing.persistence import OperationalError, ProgrammingError
from rich.console import Console
from rich.table import Table

from consumers import bootstrap
from consumers.read_models import ReadModels, read_models
from domain.application import ChangeRecorder
from projections.person_state import AddressLookup, PersonState
from projections.person_view import VIEWS
from projections.person_view import look_up as read_answer


@contextmanager
def reading() -> Iterator[tuple[ChangeRecorder, bootstrap.Settings]]:
    config = bootstrap.settings()
    store = bootstrap.open_store(config)
    try:
        yield store, config
    except (OperationalError, ProgrammingError) as error:
        raise click.ClickException(
            f"the event store cannot be read ({error}); has anything been ingested yet?"
        ) from None
    finally:
        store.close()


@contextmanager
def caught_up() -> Iterator[tuple[ReadModels, bootstrap.Settings]]:
    """The read models, each brought up to the log's head first (a CLI answer is never stale)."""
    with reading() as (store, config):
        models = read_models(store)
        try:
            models.catch_up()
            yield models, config
        finally:
            models.close()


def look_up(identity: str) -> PersonState | AddressLookup | None:
    """A person given by the sales tool's person id, or an address with its persons."""
    with caught_up() as (models, config):
        key = bootstrap.key_of(config, identity)
        with models.reading(VIEWS) as select:
            return read_answer(select, key, models.addresses_table)


@click.command()
@click.argument("identity")
@click.option("--json", "as_json", is_flag=True, help="Print the answer as JSON.")
def person(identity: str, as_json: bool) -> None:
    """Show the opt-out answer of IDENTITY: a person id, or an email address (with every person
    that carries it)."""
    found = look_up(identity)
    if found is None:
        raise click.ClickException("no such person or address in the event log")
    if as_json:
        click.echo(msgspec.json.encode(found).decode())
        return
    console = Console(width=None if Console().is_terminal else 120)
    if isinstance(found, AddressLookup):
        print_state(found.address, console)
        for carrier in found.persons:
            console.print()
            print_state(carrier, console)
    else:
        print_state(found, console)


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
    title = state.person_key if state.kind == "person" else _address_title(state)
    console.print(f"[bold]{title}[/]  {status}")
    if state.opted_out_by_addresses:
        console.print(
            "  opted out by the address it carries (an unsubscribe its recipient made, which "
            "no removal on this person undoes)"
        )
    if state.latest_unsubscribe is not None:
        mark = state.latest_unsubscribe
        console.print(f"  latest unsubscribe {utc(mark.occurred_at)} via {mark.source}")
    if state.latest_removal is not None:
        mark = state.latest_removal
        console.print(f"  latest removal     {utc(mark.occurred_at)} via {mark.source}")
    if state.kind == "person" and state.addresses:
        shown = ", ".join(a.email or f"{a.key[:18]}… (erased)" for a in state.addresses)
        console.print(f"  addresses: {shown}")
    if state.carried_by:
        console.print(f"  carried by: {', '.join(state.carried_by)}")
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
    if state.history:
        console.print(table)
    for entry in state.history:
        if entry.change == "salesforce_accepted":
            console.print(f"  Salesforce accepted at {utc(entry.occurred_at)}: {entry.reason}")
        elif entry.change in ("salesforce_refused", "push_waiting") and entry is state.history[-1]:
            console.print(f"  Salesforce push: {entry.change}: {entry.reason}")


def _address_title(state: PersonState) -> str:
    email = state.addresses[0].email if state.addresses else None
    return f"address {email}" if email else f"address {state.person_key[:22]}… (erased)"
