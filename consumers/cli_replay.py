"""`optout-sync replay`: the opt-out answers at a past instant, folded from the event log."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import click
import msgspec
from eventsourcing.persistence import OperationalError, ProgrammingError

from consumers import bootstrap
from projections.replay import AnswerAt, By, KeyAt, LogAt, key_at, log_at


class Instant(click.ParamType):
    """An RFC 3339 date and time with its offset (`2026-11-03T09:00:00Z`)."""

    name = "instant"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, datetime):
            return value
        try:
            moment = datetime.fromisoformat(str(value))
        except ValueError:
            self.fail(f"{value!r} is not a date and time like 2026-11-03T09:00:00Z", param, ctx)
        if moment.tzinfo is None:
            self.fail(f"{value!r} has no offset: add Z or +HH:MM", param, ctx)
        return moment


@click.command()
@click.option(
    "--as-of",
    "as_of",
    type=Instant(),
    required=True,
    metavar="T",
    help="The instant, with its offset: 2026-11-03T09:00:00Z.",
)
@click.option(
    "--person",
    "identity",
    metavar="ID_OR_EMAIL",
    help="One person's (or an email's) answer instead of the whole log's counts.",
)
@click.option(
    "--by",
    type=click.Choice([b.value for b in By]),
    default=By.RECORDED.value,
    show_default=True,
    help="recorded: the events recorded by T, as the system knew it then; occurred: the "
    "changes that occurred by T, as known now (a late-arriving older change included).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the answer as JSON.")
def replay(as_of: datetime, identity: str | None, by: str, as_json: bool) -> None:
    """The opt-out state at a past instant T, replayed from the event log.

    By default, as the system knew it then: only the events recorded by T count. The whole log
    gives counts of persons and addresses opted out and subscribed; --person gives one person's
    answer (an email: the address and every person carrying it at T).
    """
    config = bootstrap.settings()
    with bootstrap.reachable(config):
        store = bootstrap.open_store(config)
        try:
            if identity is None:
                found: KeyAt | LogAt = log_at(store, as_of, By(by))
            else:
                key = bootstrap.key_of(config, identity)
                if store.person(key) is None and not store.carriers(key):
                    raise click.ClickException("no such person or address in the event log")
                found = key_at(store, key, as_of, By(by))
        except (OperationalError, ProgrammingError) as error:
            raise click.ClickException(
                f"the event store cannot be read ({error}); has anything been ingested yet?"
            ) from None
        finally:
            store.close()
    if as_json:
        click.echo(msgspec.json.encode(found).decode())
    elif isinstance(found, LogAt):
        click.echo(f"as of {found.as_of.isoformat()} (events {found.by} by then):")
        click.echo(f"  changes counted: {found.changes:,}")
        for name, count in (("persons", found.persons), ("addresses", found.addresses)):
            click.echo(
                f"  {name:9}  {count.opted_out:,} opted out, {count.subscribed:,} subscribed"
            )
    else:
        click.echo(f"as of {found.as_of.isoformat()} (events {found.by} by then):")
        _print(found.answer)
        for carrier in found.carried_by:
            _print(carrier, indent="  ")


def _print(answer: AnswerAt, indent: str = "") -> None:
    name = answer.key if answer.kind == "person" else f"address {answer.key[:22]}…"
    if not answer.known:
        click.echo(f"{indent}{name}: not known yet (subscribed)")
        return
    click.echo(f"{indent}{name}: {'opted out' if answer.opted_out else 'subscribed'}")
    if answer.opted_out_by_addresses:
        click.echo(f"{indent}  opted out by the address(es) it carries")
    for label, mark in (
        ("unsubscribe", answer.latest_unsubscribe),
        ("removal", answer.latest_removal),
    ):
        if mark is not None:
            click.echo(
                f"{indent}  latest {label}: {mark.occurred_at.isoformat()} via {mark.source}"
            )
    click.echo(f"{indent}  Salesforce id: {answer.salesforce_id or '-'}")
