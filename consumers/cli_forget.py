"""`optout-sync forget`: erase a person's or an address's clear email, keep the opt-out."""

from __future__ import annotations

import click
import msgspec

from consumers import bootstrap


@click.command()
@click.argument("identity")
@click.option("--json", "as_json", is_flag=True, help="Print what was erased as JSON.")
def forget(identity: str, as_json: bool) -> None:
    """Erase the clear email address of IDENTITY (a person id, or the address itself).

    What stays: the opt-out (the person and the address remain opted out), the keyed hash that
    recognises the address when it arrives again, and the audit of who changed what, when and
    through which source. The address is not recorded again when it arrives later.
    """
    config = bootstrap.settings()
    with bootstrap.reachable(config):
        store = bootstrap.open_store(config)
        try:
            key = bootstrap.key_of(config, identity)
            if store.person(key) is None and not store.carriers(key):
                raise click.ClickException("no such person or address in the event log")
            erased = store.forget(key)
            answer = store.standing(key)[1]
        finally:
            store.close()
    result = {"erased": len(erased), "opted_out": answer.opted_out}
    if as_json:
        click.echo(msgspec.json.encode(result).decode())
    else:
        click.echo(
            f"erased {len(erased)} address(es); still "
            f"{'opted out' if answer.opted_out else 'subscribed'}"
        )
