"""`optout-sync push`: the long-running live pusher, one active per store."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import UTC, datetime

import click
import msgspec

from adapters.salesforce import BudgetSpent, SalesforceFailure
from adapters.settings import ConfigError, Settings
from consumers import bootstrap, health
from consumers.metrics import PusherMetrics
from consumers.pusher import LockLost, Pusher
from consumers.stopping import idle_exit_option, stop_on_signals

log = logging.getLogger(__name__)
FIELD_MISSING_PASS_S = 2.0  # with the field missing: the pass that records the waits, then exit


@dataclass
class _Watched:
    """What /readyz and /metrics see of this process as it starts, waits for the lock, pushes."""

    stopping: threading.Event
    starting: str = "starting: connecting to the event store"
    pusher: Pusher | None = None

    def not_ready(self) -> list[str]:
        if self.pusher is not None:
            return self.pusher.not_ready()
        return ["stopping"] if self.stopping.is_set() else [self.starting]


def _started(config: Settings, watched: _Watched, *, waits: bool) -> Pusher | None:
    """The pusher; while the daily budget is spent (its count carried from before a restart),
    a long-running pusher waits for the window to free a call instead of calling."""
    while True:
        try:
            return bootstrap.pusher(config)
        except BudgetSpent as spent:
            if not waits:
                raise
            log.warning("%s: waiting", spent)
            watched.starting = f"paused by the daily API budget: {spent}"
            if watched.stopping.wait(
                max(1.0, (spent.resets_at - datetime.now(UTC)).total_seconds())
            ):
                return None


@click.command()
@idle_exit_option("with nothing read or pushed")
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
    watched = _Watched(stopping)
    metrics = PusherMetrics(lambda: watched.pusher, watched.not_ready)
    try:
        with health.serving(config, [metrics], watched.not_ready), bootstrap.reachable(config):
            if not lock.try_acquire():
                log.warning("another pusher is active on this store: waiting to take over")
                watched.starting = "waiting for the pusher lock: another pusher is active"
                if not lock.acquire(stopping):
                    return
            log.info("this is the store's active pusher")
            watched.starting = "starting: logging in to Salesforce, finding the opt-out field"
            try:
                pusher = _started(config, watched, waits=idle_exit is None)
                if pusher is None:
                    return  # stopped while the budget was spent
            except SalesforceFailure as error:  # a refused login, the opt-out field missing, ...
                raise click.ClickException(f"Salesforce: {error}") from None
            except ConfigError as error:  # no org configured
                raise click.ClickException(f"configuration: {error}") from None
            pusher.stopping, pusher.holds_lock = stopping, lock.held
            watched.pusher = pusher
            if pusher.field_missing is not None:
                idle_exit = FIELD_MISSING_PASS_S  # record why each person waits, then stop
            try:
                stats = pusher.run(idle_exit_s=idle_exit)
            except (SalesforceFailure, LockLost) as error:  # not weather: stop and say why
                raise click.ClickException(str(error)) from None
            finally:
                pusher.close()
    except ConfigError as error:  # OPTOUT_METRICS_PORT cannot be served
        raise click.ClickException(str(error)) from None
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
