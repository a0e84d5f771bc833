"""`optout-sync dlq`: inspect and re-drive dead letters."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime

import click
import msgspec
from rich.console import Console
from rich.table import Table

from adapters import dead_letter
from adapters.dead_letter import DeadLetter
from consumers import bootstrap, logs
from consumers.cli_person import utc


def _letter_id(value: str | None, hint: str) -> str | None:
    if value is not None:
        try:
            dead_letter.parse_id(value)
        except ValueError as error:
            raise click.BadParameter(str(error), param_hint=hint) from None
    return value


@click.group()
def dlq() -> None:
    """Dead letters: messages the ingest could not accept, with the reason."""


@dlq.command("list")
@click.option(
    "--limit",
    default=100,
    show_default=True,
    type=click.IntRange(1),
    help="At most this many letters (a page).",
)
@click.option(
    "--from",
    "start",
    metavar="ID",
    callback=lambda _ctx, _param, value: _letter_id(value, "--from"),
    help="Start at this id (partition:offset); the end of a page names the next one.",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per dead letter.")
def list_(limit: int, start: str | None, as_json: bool) -> None:
    """List dead letters (id, reason, origin, redrive), in pages ordered by partition and offset."""
    config = bootstrap.settings()
    with bootstrap.reachable(config), _read_errors():
        page = dead_letter.page(config, start=start, limit=limit)
    if as_json:
        for letter in page.letters:
            click.echo(msgspec.json.encode(letter).decode())
        if page.next:  # stdout stays one letter a line; the way on is for whoever pages
            logs.say(f"more: --from {page.next}")
        return
    table = Table("id", "code", "reason", "origin", "bytes")
    table.add_column("re-driven", no_wrap=True)
    for letter in page.letters:
        table.add_row(
            letter.id,
            letter.code,
            letter.reason,
            f"{letter.origin_topic}:{letter.origin_partition}@{letter.origin_offset}",
            "null" if letter.size is None else str(letter.size),
            f"{utc(datetime.fromisoformat(letter.redriven.at))}\nto {letter.redriven.to}"
            if letter.redriven
            else "-",
        )
    Console().print(table)
    shown = f"{len(page.letters)} dead letters" + (f" from {start}" if start else "")
    if page.next:
        click.echo(f"{shown}; more: optout-sync dlq list --from {page.next} --limit {limit}")
    else:
        click.echo(shown)


@dlq.command()
@click.argument("ids", nargs=-1)
@click.option("--all", "everything", is_flag=True, help="Re-drive every dead letter.")
@click.option("--code", default=None, help="Re-drive the dead letters with this reason code.")
@click.option("--again", is_flag=True, help="Also re-send letters that were re-driven before.")
@click.option("--json", "as_json", is_flag=True, help="Print what was re-sent as JSON.")
def redrive(
    ids: tuple[str, ...], everything: bool, code: str | None, again: bool, as_json: bool
) -> None:
    """Re-send chosen dead letters (IDS as partition:offset, --code, or --all) to the inbound topic.

    Each re-drive is recorded; a letter re-driven before is re-sent only with --again. With
    --all or --code, such letters are left out (and named); naming them by id is refused.
    """
    if not (ids or everything or code):
        raise click.UsageError("name dead letters by id, or use --code or --all")
    if ids and (everything or code):
        raise click.UsageError("name dead letters by id, or use --code or --all, not both")
    for letter_id in ids:
        _letter_id(letter_id, "IDS")
    config = bootstrap.settings()
    left_out: list[DeadLetter] = []
    with bootstrap.reachable(config), _read_errors():
        if ids:
            chosen, unknown = dead_letter.fetch(config, ids)
            if unknown:
                raise click.ClickException(f"no dead letter with id {', '.join(unknown)}")
        else:
            letters = dead_letter.read(config)
            chosen = [letter for letter in letters if everything or letter.code == code]
            if not again:
                left_out = [letter for letter in chosen if letter.redriven]
                chosen = [letter for letter in chosen if not letter.redriven]
                if left_out and not chosen:
                    raise click.ClickException(str(dead_letter.AlreadyRedriven(left_out)))
        try:
            sent = dead_letter.redrive(config, chosen, again=again)
        except ValueError as error:
            raise click.ClickException(str(error)) from None
    skipped = [letter.id for letter in left_out]
    if as_json:
        answer = {"redriven": sent, "ids": [letter.id for letter in chosen], "left_out": skipped}
        click.echo(msgspec.json.encode(answer).decode())
        return
    click.echo(f"re-drove {sent}")
    if skipped:
        click.echo(f"left out {len(skipped)} re-driven before: {', '.join(skipped)} (--again)")


@contextmanager
def _read_errors() -> Iterator[None]:
    try:
        yield
    except TimeoutError as error:
        raise click.ClickException(str(error)) from None
