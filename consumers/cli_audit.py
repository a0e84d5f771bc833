"""`optout-sync audit report | export`: who unsubscribed via sales, marketing or Salesforce, from
the audit trail read model (caught up with the log first)."""

from __future__ import annotations

import csv
from datetime import UTC, datetime
from pathlib import Path

import click
import msgspec
from rich.console import Console
from rich.table import Table

from consumers.cli_person import caught_up
from projections.audit_trail import AUDIT, AuditReport, export_rows, report
from projections.views import view

FAR_PAST = datetime(1970, 1, 1, tzinfo=UTC)


class Moment(click.ParamType):
    """An RFC 3339 time with an offset, or a date (midnight UTC)."""

    name = "TIME"

    def convert(
        self, value: object, param: click.Parameter | None, ctx: click.Context | None
    ) -> datetime:
        if isinstance(value, datetime):
            return value
        text = str(value).strip()
        try:
            moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            self.fail(f"{text!r} is not a date (2026-03-01) or a time with an offset", param, ctx)
        if moment.tzinfo is None:
            if len(text) > 10:
                self.fail(f"{text!r} has no offset (add Z or +HH:MM)", param, ctx)
            moment = moment.replace(tzinfo=UTC)
        return moment


WINDOW = [
    click.option("--since", type=Moment(), default=None, help="From this time (inclusive)."),
    click.option("--until", type=Moment(), default=None, help="To this time (exclusive; now)."),
    click.option(
        "--by",
        type=click.Choice(["occurred", "recorded"]),
        default="occurred",
        show_default=True,
        help="Which time the window applies to: when a change occurred, or when it was recorded.",
    ),
]


def window(function: click.decorators.FC) -> click.decorators.FC:
    for option in reversed(WINDOW):
        function = option(function)
    return function


@click.group()
def audit() -> None:
    """The audit trail: who unsubscribed, through which source, when; what Salesforce did."""


@audit.command("report")
@window
@click.option("--json", "as_json", is_flag=True, help="Print the counts and rows as JSON.")
def report_command(since: datetime | None, until: datetime | None, by: str, as_json: bool) -> None:
    """Who unsubscribed via sales, via marketing and via Salesforce in a window: counts by
    source, and every unsubscribe (person, actor, channel, reason, the Salesforce outcome)."""
    since, until = _window(since, until)
    with caught_up() as (models, _), models.reading((view(AUDIT),)) as select:
        found = report(select, since, until, by=by)
    if as_json:
        click.echo(msgspec.json.encode(found).decode())
        return
    print_report(found)


def print_report(found: AuditReport, console: Console | None = None) -> None:
    console = console or Console(width=None if Console().is_terminal else 160)
    console.print(f"[bold]unsubscribes by {found.by} time, {found.since} to {found.until}[/]")
    for source, count in found.counts.items():
        console.print(f"  via {source:<10} {count} (persons: {found.persons.get(source, 0)})")
    table = Table()
    for heading in ("occurred", "person", "via", "actor", "channel", "reason", "Salesforce"):
        table.add_column(heading, no_wrap=heading in ("occurred", "person", "Salesforce"))
    for row in found.rows:
        occurred = f"{row.occurred_at[:10]} {row.occurred_at[11:19]}Z"
        outcome = row.salesforce_outcome or "-"
        if row.salesforce_outcome_at:  # the day is shown when it is not the change's
            at = row.salesforce_outcome_at
            same_day = at[:10] == row.occurred_at[:10]
            outcome += f" {at[11:19]}Z" if same_day else f" {at[:10]} {at[11:19]}Z"
        table.add_row(
            occurred, row.person_key, row.source, row.actor, row.channel, row.reason or "", outcome
        )
    if found.rows:
        console.print(table)


@audit.command("export")
@window
@click.option(
    "--format",
    "file_format",
    type=click.Choice(["csv", "parquet"]),
    required=True,
    help="CSV (a header row, UTF-8) or Parquet (typed columns, for analytics).",
)
@click.option(
    "--with-emails",
    is_flag=True,
    help="Add each row's clear address (empty once erased by `optout-sync forget`).",
)
@click.option("--json", "as_json", is_flag=True, help="Print what was written as JSON.")
@click.argument("file", type=click.Path(dir_okay=False, writable=True, path_type=Path))
def export(
    since: datetime | None,
    until: datetime | None,
    by: str,
    file_format: str,
    with_emails: bool,
    as_json: bool,
    file: Path,
) -> None:
    """Write every audit row in a window (changes and Salesforce outcomes, in log order) to
    FILE. Addresses appear as their keys unless --with-emails."""
    since, until = _window(since, until)
    with caught_up() as (models, _), models.reading((view(AUDIT),)) as select:
        names, rows = export_rows(
            select,
            since,
            until,
            by=by,
            addresses_table=models.addresses_table if with_emails else None,
        )
    try:
        if file_format == "csv":
            with file.open("w", newline="", encoding="utf-8") as out:
                writer = csv.writer(out)
                writer.writerow(names)
                writer.writerows(rows)
        else:
            _write_parquet(file, names, rows)
    except OSError as error:
        raise click.ClickException(f"cannot write {file}: {error.strerror}") from None
    written = {"file": str(file), "format": file_format, "rows": len(rows)}
    if as_json:
        click.echo(msgspec.json.encode(written).decode())
    else:
        click.echo(f"wrote {len(rows)} audit rows to {file} ({file_format})")


def _write_parquet(file: Path, names: list[str], rows: list[tuple[object, ...]]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    integers = {name for name, kind in AUDIT.columns if kind == "integer"}
    columns = {
        name: pa.array(
            [row[index] for row in rows], type=pa.int64() if name in integers else pa.string()
        )
        for index, name in enumerate(names)
    }
    pq.write_table(pa.table(columns), file)


def _window(since: datetime | None, until: datetime | None) -> tuple[datetime, datetime]:
    since = since or FAR_PAST
    until = until or datetime.now(UTC)
    if until <= since:
        raise click.UsageError("--until must be after --since")
    return since, until
