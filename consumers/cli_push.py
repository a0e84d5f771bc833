"""`optout-sync push`: the long-running live pusher, one active per store."""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime

import click
import msgspec

from adapters.salesforce import BudgetSpent, SalesforceFailure
from adapters.settings import ConfigError, Settings
from consumers import bootstrap
from consumers.pusher import LockLost, Pusher
from consumers.stopping import stop_on_signals

log = logging.getLogger(__name__)
FIELD_MISSING_PASS_S = 2.0  # with the field missing: the pass that records the waits, then exit


def _started(config: Settings, stopping: threading.Event, *, waits: bool) -> Pusher | None:
    """The pusher; while the daily budget is spent (its count carried from before a restart),
    a long-running pusher waits for the window to free a call instead of calling."""
    while True:
        try:
            return bootstrap.pusher(config)
        except BudgetSpent as spent:
            if not waits:
                raise
            log.warning("%s: waiting", spent)
            if stopping.wait(max(1.0, (spent.resets_at - datetime.now(UTC)).total_seconds())):
                return None


@click.command()
@click.option(
    "--idle-exit",
    type=float,
    default=None,
    metavar="SECONDS",
    help="Exit after this long with nothing read or pushed (default: run until SIGTERM/SIGINT).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the run's counts as JSON on exit.")
def push(idle_exit: float | None, as_json: bool) -> None:
    """Push every opt-out in the event log to Salesforce, live, in batches of up to 200, with
    what Salesforce did recorded in each person's history.

    A removed unsubscribe is never pushed; a person with no Salesforce id waits ("pending link")
    until one arrives. One pusher is active per store: a second one waits and takes over when the
    first ends. Stops at SIGTERM or Ctrl-C; a restart resumes from its stored position."""
    config = bootstrap.settings()
    stopping = threading.Event()
    stop_on_signals(stopping.set)
    lock = bootstrap.pusher_lock(config)
    try:
        with bootstrap.reachable(config):
            if not lock.try_acquire():
                log.warning("another pusher is active on this store: waiting to take over")
                if not lock.acquire(stopping):
                    return
            log.info("this is the store's active pusher")
            try:
                pusher = _started(config, stopping, waits=idle_exit is None)
                if pusher is None:
                    return  # stopped while the budget was spent
            except SalesforceFailure as error:  # a refused login, the opt-out field missing, ...
                raise click.ClickException(f"Salesforce: {error}") from None
            except ConfigError as error:  # no org configured
                raise click.ClickException(f"configuration: {error}") from None
            pusher.stopping, pusher.holds_lock = stopping, lock.held
            if pusher.field_missing is not None:
                idle_exit = FIELD_MISSING_PASS_S  # record why each person waits, then stop
            try:
                stats = pusher.run(idle_exit_s=idle_exit)
            except (SalesforceFailure, LockLost) as error:  # not weather: stop and say why
                raise click.ClickException(str(error)) from None
            finally:
                pusher.store.close()
    finally:
        lock.release()
    if pusher.field_missing is not None:
        raise click.ClickException(
            f"Salesforce: the opt-out field is missing: {pusher.field_missing} "
            f"({stats.waiting} opt-outs wait for it, each said in its person's history)"
        )
    if as_json:
        click.echo(msgspec.json.encode(stats.__dict__).decode())
    else:
        click.echo(
            f"accepted {stats.accepted} opt-outs, {stats.refused} refused, {stats.retried} to "
            f"retry, {stats.waiting} waiting; {stats.calls} Salesforce API calls"
        )
