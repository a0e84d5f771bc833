"""`optout-sync services`: run the project's own Apache Kafka and PostgreSQL locally (no Docker)."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import TypeVar

import click
import msgspec

import devservices as local_services
from consumers import logs
from devservices import ServiceError, ServiceStatus
from devservices.settings import ServiceSettings, SettingError, load

F = TypeVar("F", bound=Callable[..., object])


def _selected(kafka: bool, postgres: bool) -> list[str]:
    chosen = [name for name, wanted in (("kafka", kafka), ("postgres", postgres)) if wanted]
    if not chosen:
        raise click.UsageError("nothing selected: drop one of --no-kafka / --no-postgres")
    return chosen


def _settings() -> ServiceSettings:
    try:
        return load()
    except SettingError as error:
        raise click.ClickException(str(error)) from None


def _choice(command: F) -> F:
    command = click.option(
        "--postgres/--no-postgres", default=True, show_default=True, help="Include PostgreSQL."
    )(command)
    return click.option(
        "--kafka/--no-kafka", default=True, show_default=True, help="Include Apache Kafka."
    )(command)


def _describe(current: ServiceStatus, *, after_up: bool = False) -> str:
    where = f"{current.endpoint} ({current.version})"
    if current.state != "running":
        return f"{current.name}: {current.state}  {where}  log {current.log_path}"
    state = "running"
    if after_up:
        state = f"started in {current.start_seconds:.1f}s" if current.started else "already running"
    return f"{current.name}: {state}, pid {current.pid}  {where}  log {current.log_path}"


@click.group()
def services() -> None:
    """Local Apache Kafka (KRaft, jars from Maven Central) and PostgreSQL (Debian's) for development
    and tests. State and logs live under OPTOUT_STATE_DIR; see docs/services.md."""


@services.command()
@_choice
@click.option("--json", "as_json", is_flag=True, help="Print the services' status as JSON.")
def up(kafka: bool, postgres: bool, as_json: bool) -> None:
    """Start the services (a running one is left as it is). Exits non-zero if one fails to start."""
    config = _settings()
    reports: list[ServiceStatus] = []
    failed = False
    for name in _selected(kafka, postgres):
        try:
            reports.append(local_services.up(name, config))
        except ServiceError as error:
            failed = True
            logs.say(f"{name}: failed to start\n{error}", logging.ERROR)
            continue
        if not as_json:
            click.echo(_describe(reports[-1], after_up=True))
    if as_json:
        click.echo(msgspec.json.encode(reports).decode())
    if failed:
        sys.exit(1)


@services.command()
@_choice
def down(kafka: bool, postgres: bool) -> None:
    """Stop the services that `up` started (clean shutdown, then SIGKILL after a timeout)."""
    config = _settings()
    failed = False
    for name in _selected(kafka, postgres):
        try:
            pid = local_services.down(name, config)
        except ServiceError as error:
            failed = True
            logs.say(f"{name}: failed to stop\n{error}", logging.ERROR)
            continue
        click.echo(f"{name}: stopped pid {pid}" if pid else f"{name}: was not running")
    if failed:
        sys.exit(1)


@services.command()
@_choice
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def status(kafka: bool, postgres: bool, as_json: bool) -> None:
    """Report each service: running/stopped, pid, endpoint, version and log path."""
    config = _settings()
    try:
        reports = [local_services.status(name, config) for name in _selected(kafka, postgres)]
    except ServiceError as error:
        raise click.ClickException(str(error)) from None
    if as_json:
        click.echo(msgspec.json.encode(reports).decode())
    else:
        for report in reports:
            click.echo(_describe(report))
