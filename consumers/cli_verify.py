"""`optout-sync verify`: proof that the event log was not altered (the hash chain beside it)."""

from __future__ import annotations

import click
import msgspec
from eventsourcing.persistence import OperationalError, ProgrammingError

from adapters.log_verify import Chained, Verdict, verify
from consumers import bootstrap


def _head(value: str | None) -> bytes | None:
    if value is None:
        return None
    try:
        head = bytes.fromhex(value)
    except ValueError:
        head = b""
    if len(head) != 32:
        raise click.BadParameter(
            "a chain head is 64 hexadecimal digits", param_hint="--expect-head"
        )
    return head


@click.command(name="verify")
@click.option(
    "--expect-head",
    metavar="HEAD",
    help="A chain head printed by an earlier verify and kept elsewhere: fail unless the chain "
    "still passes through it.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the verdict as JSON.")
def verify_log(expect_head: str | None, as_json: bool) -> None:
    """Check that the event log was not altered.

    Walks the hash chain over the log in store order and names the first event altered, deleted,
    re-ordered, or written outside the chain. Prints the chain head: keep it elsewhere and pass
    it back with --expect-head, which also catches a log rewritten together with its chain.
    Exits 1 when the log fails the check.
    """
    kept = _head(expect_head)
    config = bootstrap.settings()
    with bootstrap.reachable(config):
        store = bootstrap.open_store(config)
        try:
            recorder = store.recorder
            if not isinstance(recorder, Chained):
                raise click.ClickException(f"{type(recorder).__name__} keeps no hash chain")
            verdict = verify(recorder, kept)
        except (OperationalError, ProgrammingError) as error:
            raise click.ClickException(
                f"the event store cannot be read or has no chain yet ({error}); "
                "run `optout-sync init` once on it"
            ) from None
        finally:
            store.close()
    if as_json:
        click.echo(msgspec.json.encode(verdict).decode())
    else:
        _print(verdict)
    if not verdict.ok:
        raise SystemExit(1)


def _print(verdict: Verdict) -> None:
    if verdict.ok:
        click.echo(f"log intact: {verdict.events:,} events in {verdict.chain_rows:,} chain rows")
    else:
        assert verdict.problem is not None
        problem = verdict.problem
        click.echo(f"log ALTERED ({problem.kind}): {problem.detail}")
        if problem.originator_id is not None:
            click.echo(
                f"  the event of aggregate {problem.originator_id}, "
                f"version {problem.originator_version}"
            )
        click.echo(f"  {verdict.events:,} events before it matched the chain")
    if verdict.sealed_events:
        click.echo(
            f"  {verdict.sealed_events:,} events were stored before the chain existed and were "
            f"sealed at {verdict.sealed_at}: they are proven unchanged since then, not before"
        )
    if verdict.expected_head is not None and verdict.ok:
        click.echo("  the kept head is in the chain")
    covered = f" (up to event #{verdict.last_event})" if verdict.last_event else ""
    label = "chain head" if verdict.ok else "last good chain head"
    click.echo(f"{label}{covered}: {verdict.head}")
