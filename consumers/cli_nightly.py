"""`optout-sync nightly`: the nightly bidirectional pass — scheduled, now, planned, or its history."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import TypeVar
from zoneinfo import ZoneInfo

import click
import msgspec

from adapters.salesforce import SalesforceFailure
from adapters.settings import ConfigError, Settings
from consumers import bootstrap, health, logs
from consumers.metrics import SchedulerMetrics
from consumers.nightly import NightlyRun, PassPlan, PassRefused, PassReport
from consumers.nightly_schedule import Schedule, ScheduleStats, run_schedule
from consumers.stopping import stop_on_signals
from domain.nightly_pass import passes, recorded_slots

log = logging.getLogger(__name__)
Progress = Callable[[str], None]
T = TypeVar("T")


@click.command()
@click.option("--now", is_flag=True, help="Run one pass now and exit.")
@click.option(
    "--dry-run",
    is_flag=True,
    help="Print the plan (to import, to push, conflicts, estimated API calls); writes nothing "
    "anywhere (reads Salesforce with GET requests only).",
)
@click.option("--history", is_flag=True, help="List the recorded passes, oldest first.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--quiet", is_flag=True, help="No progress lines on stderr.")
def nightly(now: bool, dry_run: bool, history: bool, as_json: bool, quiet: bool) -> None:
    """The nightly unsubscribe sync with Salesforce, in both directions (PRODUCT.md §1.3-1.4).

    Without an option: runs daily at OPTOUT_NIGHTLY_AT in OPTOUT_NIGHTLY_ZONE (default 20:00
    America/Los_Angeles) until SIGTERM/SIGINT, a pass missed while it was down first. Salesforce
    records whose opt-out field is checked become unsubscribes here (source salesforce); every
    opt-out here that Salesforce has not accepted is set there. Re-subscribes never sync: a
    removed unsubscribe still checked in Salesforce comes back and is reported as a conflict.
    Needs OPTOUT_NIGHTLY_SYNC=on (except --dry-run and --history)."""
    if sum((now, dry_run, history)) > 1:
        raise click.UsageError("choose one of --now, --dry-run, --history")
    config = bootstrap.settings()
    if history:
        _history(config, as_json)
        return
    progress = (lambda _: None) if quiet else (lambda line: logs.say(f"nightly: {line}"))
    if dry_run:
        runner = _runner(config, progress)
        try:
            with bootstrap.reachable(config):
                plan = _refusing(runner.plan)
        finally:
            runner.store.close()
        _print_plan(plan, as_json, config.nightly_sync)
        return
    if not config.nightly_sync:
        raise click.ClickException(
            "the nightly sync is off (OPTOUT_NIGHTLY_SYNC=on enables it); the live push "
            "(optout-sync push) runs regardless"
        )
    stopping = threading.Event()
    stop_on_signals(stopping.set)
    if now:
        report = _locked_pass(config, None, stopping, progress)
        if report is not None:
            _print_report(report, as_json)
            if report.outcome != "done":
                raise click.ClickException(f"the pass failed: {report.error}")
        return
    _schedule(config, stopping, progress)


def _runner(config: Settings, progress: Progress) -> NightlyRun:
    try:
        with bootstrap.reachable(config):
            return bootstrap.nightly(config, progress)
    except SalesforceFailure as error:  # a refused login
        raise click.ClickException(f"Salesforce: {error}") from None
    except ConfigError as error:  # no org configured
        raise click.ClickException(f"configuration: {error}") from None


def _refusing(call: Callable[[], T]) -> T:
    try:
        return call()
    except PassRefused as refused:
        raise click.ClickException(f"the pass refuses to run: {refused}") from None
    except SalesforceFailure as error:
        raise click.ClickException(f"Salesforce: {error}") from None


def _locked_pass(
    config: Settings, slot: date | None, stopping: threading.Event, progress: Progress
) -> PassReport | None:
    """One pass under the store's nightly lock; None when a scheduled slot was already run."""
    lock = bootstrap.nightly_lock(config)
    with bootstrap.reachable(config):
        if not lock.try_acquire():
            log.warning("another nightly pass is running on this store: waiting for it")
            if not lock.acquire(stopping):
                return None
        try:
            runner = _runner(config, progress)
            try:
                if slot is not None and slot.isoformat() in recorded_slots(runner.store):
                    return None  # another scheduler ran it meanwhile
                report: PassReport = _refusing(
                    lambda: runner.run(slot.isoformat() if slot else None)
                )
                return report
            finally:
                runner.store.close()
        finally:
            lock.release()


def _schedule(config: Settings, stopping: threading.Event, progress: Progress) -> None:
    schedule = Schedule(config.nightly_at, ZoneInfo(config.nightly_zone))
    stats = ScheduleStats()

    def recorded() -> set[str]:
        try:
            store = bootstrap.open_store(config)
            try:
                slots = recorded_slots(store)
            finally:
                store.close()
        except Exception as error:
            stats.store_error = type(error).__name__
            raise
        stats.store_error = None
        return slots

    def not_ready() -> list[str]:
        reasons = ["stopping"] if stopping.is_set() else []
        if stats.store_error is not None:
            reasons.append(f"the event store does not answer ({stats.store_error})")
        return reasons

    def run_slot(slot: date) -> bool:
        log.warning("nightly pass of %s starting", slot.isoformat())
        try:
            report = _locked_pass(config, slot, stopping, progress)
        except click.ClickException as error:
            log.error("nightly pass of %s failed: %s (tried again later)", slot, error.message)
            stats.passes["failed"] += 1
            return False
        except Exception:  # the scheduler outlives a failed pass: it is tried again later
            log.exception("nightly pass of %s failed (tried again later)", slot)
            stats.passes["failed"] += 1
            return False
        if report is None:
            log.warning("nightly pass of %s: already run (by another scheduler)", slot)
            stats.passes["already_run"] += 1
        else:
            log.warning("nightly pass of %s: %s", slot, _summary(report))
            stats.passes["done" if report.outcome == "done" else "failed"] += 1
            stats.last_pass_at = datetime.now(UTC)
        return True

    with (
        bootstrap.reachable(config),
        health.serving(config, [SchedulerMetrics(stats, not_ready)], not_ready),
    ):
        run_schedule(schedule, recorded, run_slot, stopping.wait, stats=stats)


def _summary(report: PassReport) -> str:
    return (
        f"read {report.read}, imported {report.imported}, pushed {report.pushed} "
        f"({report.accepted} accepted, {report.failed} failed), {len(report.conflicts)} "
        f"conflicts, {report.pending_link} pending link; {report.api_calls} API calls"
    )


def _print_report(report: PassReport, as_json: bool) -> None:
    if as_json:
        click.echo(msgspec.json.encode(report).decode())
        return
    click.echo(f"nightly pass {report.slot} {report.outcome}: {_summary(report)}")
    for conflict in report.conflicts:
        click.echo(
            f"  conflict: {conflict.record_id} ({conflict.person_key}) — removed here, still "
            "checked in Salesforce: the unsubscribe is back; uncheck the record to keep it removed"
        )


def _print_plan(plan: PassPlan, as_json: bool, enabled: bool) -> None:
    if as_json:
        click.echo(msgspec.json.encode(plan).decode())
        return
    full = f" ({', '.join(plan.full_reads)} read in full: a first pass)" if plan.full_reads else ""
    click.echo("nightly plan (dry run: nothing written anywhere)")
    if not enabled:
        click.echo("  the nightly sync is off (OPTOUT_NIGHTLY_SYNC): no pass will run")
    click.echo(f"  read from Salesforce: {plan.read} checked records{full}")
    click.echo(f"  to import: {plan.to_import} unsubscribes ({plan.already_known} already known)")
    click.echo(f"  conflicts: {len(plan.conflicts)}")
    for conflict in plan.conflicts:
        click.echo(f"    {conflict.record_id} ({conflict.person_key}): removed here, checked there")
    click.echo(f"  to push: {plan.to_push} opt-outs (by {plan.push_by})")
    click.echo(f"  pending link (no Salesforce id): {plan.pending_link}")
    click.echo(f"  estimated API calls: {plan.estimated_api_calls}")


def _history(config: Settings, as_json: bool) -> None:
    with bootstrap.reachable(config):
        store = bootstrap.open_store(config)
        try:
            recorded = list(passes(store))
        finally:
            store.close()
    fields = [
        "slot",
        "started_at",
        "finished_at",
        "outcome",
        "error",
        "read",
        "imported",
        "pushed",
        "accepted",
        "failed",
        "pending_link",
        "conflicts",
        "api_calls",
    ]
    rows = [{name: getattr(p, name) for name in fields} for p in recorded]
    if as_json:
        click.echo(msgspec.json.encode(rows).decode())
        return
    if not rows:
        click.echo("no nightly pass recorded yet")
        return
    for row in rows:
        click.echo(
            f"{row['slot']}  {row['started_at']:%Y-%m-%d %H:%M:%S %Z}  {row['outcome']}: "
            f"read {row['read']}, imported {row['imported']}, pushed {row['pushed']} "
            f"({row['accepted']} accepted, {row['failed']} failed), "
            f"{len(row['conflicts'])} conflicts, {row['api_calls']} API calls"
            + (f" — {row['error']}" if row["error"] else "")
        )
