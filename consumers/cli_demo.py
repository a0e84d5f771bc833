"""`optout-sync demo`: the main job on the embedded defaults, end to end, showing its result.

Produces a small mixed stream (sales and marketing unsubscribes, a duplicate, bad messages) to
the inbound topic, ingests it exactly once, pushes the opt-outs live to Salesforce (the local
sandbox unless an org is configured), shows the plan of tonight's nightly pass (a dry run), and
prints the stored state, with Salesforce's acceptance, the dead letters, and last the audit of the
run from the read models: who unsubscribed via sales and who via marketing.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import click
import msgspec
from rich.console import Console

from adapters import dead_letter, kafka_clients, salesforce
from adapters.inbound import Actor, ChangeV1, Channel, PersonRef, Source, encode, kafka_key
from adapters.settings import Settings, load
from consumers import bootstrap
from consumers.cli_audit import print_report
from consumers.cli_person import caught_up, look_up, print_state
from consumers.nightly import PassPlan, PassRefused
from domain.application import ChangeKind
from domain.identity import is_address, to_18
from projections.audit_trail import AUDIT, report
from projections.person_state import AddressLookup
from projections.views import view
from sandbox.runner import running_sandbox

PUSH_IDLE_S = 1.0  # the demo's pusher stops once it has had nothing to do for this long
ADA = PersonRef(person_id="demo-ada", email="ada@example.com", salesforce_id="0035g00000AbCdE")
GRACE = PersonRef(email="grace@example.com")


def _change(
    person: PersonRef, source: Source, actor: Actor, channel: Channel, **more: Any
) -> ChangeV1:
    return ChangeV1(
        event_id=uuid.uuid4(), schema_version=1, type=ChangeKind.UNSUBSCRIBED, person=person,
        source=source, actor=actor, channel=channel, occurred_at=datetime.now(UTC), **more,
    )  # fmt: skip


def _stream() -> list[tuple[str, bytes | None, bytes]]:
    """(what it is, key, value) for each demo message; fresh event ids every run."""
    rep = Actor(kind="user", id="rep-7", name="Rita Rep")
    by_rep = _change(ADA, "sales", rep, "manual", reason="asked on a call")
    by_link = _change(GRACE, "marketing", Actor(kind="recipient"), "email_link")
    again = _change(ADA, "marketing", Actor(kind="recipient"), "email_link")
    account_id = encode(by_rep).replace(b'"0035g00000AbCdE"', b'"0015g00000AbCdE"')
    return [
        ("sales unsubscribe (rep, manual)", kafka_key(by_rep), encode(by_rep)),
        (
            "marketing unsubscribe (email link, no Salesforce id)",
            kafka_key(by_link),
            encode(by_link),
        ),
        ("the sales unsubscribe delivered twice", kafka_key(by_rep), encode(by_rep)),
        ("a repeat unsubscribe from marketing", kafka_key(again), encode(again)),
        ("a bad message: not JSON", b"demo-bad", b'{"type": "unsubscribed", oops'),
        ("a bad message: an Account id, not a Contact or Lead", b"demo-bad", account_id),
    ]


@click.command()
@click.option("--timeout", type=float, default=120.0, help="Give up after this many seconds.")
def demo(timeout: float) -> None:
    """Run the whole flow on the embedded defaults and show the result."""
    console = Console(width=None if Console().is_terminal else 120)
    config = bootstrap.settings()
    broker = bootstrap.ensure_local_kafka()
    try:
        _run(config, console, timeout)
    finally:
        if broker is not None:
            console.print(
                f"\nThe local Kafka broker keeps running (pid {broker.pid}, {broker.endpoint}) "
                "for the next run and the tests.\nStop it with: "
                "[bold]optout-sync services down --no-postgres[/]"
            )


def _run(config: Settings, console: Console, timeout: float) -> None:
    """Produce the demo stream, ingest it, and show what was stored and dead-lettered."""
    bootstrap.prepare(config)
    started = datetime.now(UTC)
    console.print(
        f"[bold]Kafka[/] {config.kafka_bootstrap_servers}  [bold]store[/] {config.store_location}"
    )

    sender = kafka_clients.producer(config)
    produced = []
    for what, key, value in _stream():
        meta = sender.send(config.topic_inbound, key=key, value=value).get(timeout=30)
        produced.append((meta.partition, meta.offset))
        console.print(f"  produced {meta.partition}@{meta.offset}: {what}")
    sender.close()

    wanted = {(p, o) for p, o in produced}
    last = {p: max(o for q, o in produced if q == p) for p, _ in produced}
    worker = bootstrap.ingest(config)
    deadline = time.monotonic() + timeout

    def done(stats: object) -> bool:
        positions = worker.stats.positions
        stored = all(positions.get(f"{config.topic_inbound}:{p}", -1) >= o for p, o in last.items())
        if time.monotonic() > deadline:
            raise click.ClickException("the ingest did not catch up in time")
        return stored

    stats = worker.run(until=done)
    console.print(
        f"\n[bold]ingest[/]: stored {stats.recorded} changes, {stats.duplicates} already "
        f"recorded (ignored), {stats.dead_lettered} dead-lettered\n"
    )
    _show_salesforce(config, console)

    for identity in ("demo-ada", "grace@example.com"):
        found = look_up(identity)
        if found is None:
            raise click.ClickException(f"{identity} was not stored")
        print_state(found.address if isinstance(found, AddressLookup) else found, console)
        console.print()

    letters = [
        letter
        for letter in dead_letter.read(config)
        if letter.origin_topic == config.topic_inbound
        and (letter.origin_partition, letter.origin_offset) in wanted
    ]
    console.print(f"[bold]dead letters of this run[/] ({config.topic_dead_letter}):")
    for letter in letters:
        console.print(f"  {letter.id}  [red]{letter.code}[/]  {letter.reason}")
    if len(letters) != 2:
        raise click.ClickException(f"expected 2 dead letters from this run, found {len(letters)}")
    _show_audit(console, started)


def _show_audit(console: Console, since: datetime) -> None:
    """The run's unsubscribes from the audit trail read model: Ada via sales (a rep) and via
    marketing, Grace's address via marketing (an email link); an address is shown in clear only
    by a join at read time (`optout-sync forget` erases it)."""
    with caught_up() as (models, _):
        with models.reading((view(AUDIT),)) as select:
            found = report(select, since, datetime.now(UTC))
        shown = {
            row.person_key: f"address {models.store.address(row.person_key) or '(erased)'}"
            for row in found.rows
            if is_address(row.person_key)
        }
    rows = [
        msgspec.structs.replace(r, person_key=shown.get(r.person_key, r.person_key))
        for r in found.rows
    ]
    console.print("\n[bold]audit of this run[/] (from the read models: optout-sync audit report)")
    print_report(msgspec.structs.replace(found, rows=rows))  # its own width: seven columns


@contextmanager
def _org(config: Settings) -> Iterator[tuple[Settings, str]]:
    """The configured org, else a local sandbox seeded with the demo's people."""
    if config.salesforce_username:
        yield config, f"org at {config.salesforce_domain}.salesforce.com"
        return
    # The org is kept between runs, as a real one is: what the pusher set stays set.
    home = config.state_dir / "sandbox"
    with running_sandbox(tls_dir=home, snapshot_file=home / "org.json") as sandbox:
        if sandbox.record(str(ADA.salesforce_id)) is None:
            sandbox.insert("Contact", Id=ADA.salesforce_id, LastName="Lovelace", Email=ADA.email)
            sandbox.insert("Lead", LastName="Hopper", Company="Navy", Email=GRACE.email)
        org_env = {**os.environ, **sandbox.env()}
        yield load(org_env), f"local sandbox at {sandbox.url} (no org credentials configured)"


def _show_salesforce(config: Settings, console: Console) -> None:
    """The sync's requirements, checked against Salesforce through the real client; then the live
    push, until it has nothing left to do."""
    with _org(config) as (org_config, where):
        org = salesforce.connect(org_config)
        check = org.check_org()
        ada_id = to_18(str(ADA.salesforce_id))
        check_calls = org.calls_made
        lock = bootstrap.pusher_lock(config)
        if not lock.try_acquire():
            raise click.ClickException(
                "another `optout-sync push` is active on this store: stop it, or let it push"
            )
        try:
            pusher = bootstrap.pusher(org_config, org)
            try:
                pushed = pusher.run(idle_exit_s=PUSH_IDLE_S)
            finally:
                pusher.store.close()
        finally:
            lock.release()
        push_calls = org.calls_made - check_calls  # finding the field, and the pushes
        flags = org.opt_out_flags([ada_id])
        plan = _nightly_plan(org_config)
    console.print(f"[bold]Salesforce[/]: {where}")
    for sobject, present in check.field_present.items():
        mark = "[green]present[/]" if present else "[red]MISSING[/]"
        console.print(f"  {sobject}.{check.opt_out_field}: {mark}")
    console.print(f"  daily API requests used: {check.api_used:,} of {check.api_max:,}")
    console.print(
        f"  live push: {pushed.accepted} accepted, {pushed.refused} refused, "
        f"{pushed.waiting} waiting, in {push_calls} API calls (2 find the field)"
    )
    console.print(f"  Contact {ada_id}: {check.opt_out_field} = {flags.get(ada_id)}\n")
    _print_nightly_plan(plan, console)


def _nightly_plan(config: Settings) -> PassPlan:
    """What tonight's nightly pass would do, read-only (`optout-sync nightly --dry-run`)."""
    runner = bootstrap.nightly(config)
    try:
        return runner.plan()
    except PassRefused as refused:
        raise click.ClickException(f"the nightly plan: {refused}") from None
    finally:
        runner.store.close()


def _print_nightly_plan(plan: PassPlan, console: Console) -> None:
    read = f" ({', '.join(plan.full_reads)} in full: the first pass)" if plan.full_reads else ""
    console.print("[bold]nightly pass, planned[/] (optout-sync nightly --dry-run: nothing written)")
    console.print(f"  read from Salesforce: {plan.read} checked records{read}")
    console.print(
        f"  to import: {plan.to_import} unsubscribes ({plan.already_known} already known here); "
        f"conflicts: {len(plan.conflicts)}"
    )
    console.print(
        f"  to push: {plan.to_push} opt-outs (by {plan.push_by}); pending link (no Salesforce "
        f"id): {plan.pending_link}; estimated API calls: {plan.estimated_api_calls}\n"
    )
