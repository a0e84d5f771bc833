"""`optout-sync dlq`: inspect and re-drive dead letters."""

from __future__ import annotations

import click
import msgspec
from rich.console import Console
from rich.table import Table

from adapters import dead_letter
from consumers import bootstrap


@click.group()
def dlq() -> None:
    """Dead letters: messages the ingest could not accept, with the reason."""


@dlq.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per dead letter.")
def list_(as_json: bool) -> None:
    """List dead letters (id, reason, origin)."""
    letters = list(dead_letter.read(bootstrap.settings()))
    if as_json:
        for letter in letters:
            click.echo(msgspec.json.encode(letter).decode())
        return
    table = Table("id", "code", "reason", "origin", "bytes")
    for letter in letters:
        table.add_row(
            letter.id,
            letter.code,
            letter.reason,
            f"{letter.origin_topic}:{letter.origin_partition}@{letter.origin_offset}",
            "null" if letter.size is None else str(letter.size),
        )
    Console().print(table)
    click.echo(f"{len(letters)} dead letters")


@dlq.command()
@click.argument("ids", nargs=-1)
@click.option("--all", "everything", is_flag=True, help="Re-drive every dead letter.")
@click.option("--code", default=None, help="Re-drive the dead letters with this reason code.")
@click.option("--json", "as_json", is_flag=True, help="Print the count as JSON.")
def redrive(ids: tuple[str, ...], everything: bool, code: str | None, as_json: bool) -> None:
    """Re-send chosen dead letters (IDS as partition:offset, --code, or --all) to the inbound topic."""
    if not (ids or everything or code):
        raise click.UsageError("name dead letters by id, or use --code or --all")
    config = bootstrap.settings()
    letters = list(dead_letter.read(config))
    chosen = [
        letter
        for letter in letters
        if everything or letter.id in ids or (code is not None and letter.code == code)
    ]
    unknown = set(ids) - {letter.id for letter in letters}
    if unknown:
        raise click.ClickException(f"no dead letter with id {', '.join(sorted(unknown))}")
    try:
        sent = dead_letter.redrive(config, chosen)
    except ValueError as error:
        raise click.ClickException(str(error)) from None
    click.echo(msgspec.json.encode({"redriven": sent}).decode() if as_json else f"re-drove {sent}")
