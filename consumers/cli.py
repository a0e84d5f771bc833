"""The `optout-sync` command line: one group, each verb loaded from its own module on demand."""

from __future__ import annotations

import importlib
import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import click

# Verb name -> "module:attribute" of a click command; loaded only when used, so `--help` is fast.
VERBS: dict[str, str] = {
    "services": "consumers.cli_services:services",
    "sandbox": "consumers.cli_sandbox:sandbox",
    "init": "consumers.cli_init:init",
    "ingest": "consumers.cli_ingest:ingest",
    "push": "consumers.cli_push:push",
    "person": "consumers.cli_person:person",
    "forget": "consumers.cli_forget:forget",
    "dlq": "consumers.cli_dlq:dlq",
    "demo": "consumers.cli_demo:demo",
    # issue 12: the read models and the audit trail
    "projections": "consumers.cli_projections:projections",
    "audit": "consumers.cli_audit:audit",
}


# What a production install (the Docker image) leaves out: the fake Salesforce org and its web
# stack, and the local Kafka and PostgreSQL provisioning.
DEVELOPMENT_ONLY = {"sandbox", "devservices", "starlette", "uvicorn", "trustme", "httptools"}


@contextmanager
def development_parts(verb: str) -> Iterator[None]:
    """Turns a missing development part into a clear refusal instead of a traceback."""
    try:
        yield
    except ModuleNotFoundError as error:
        if error.name and error.name.split(".")[0] in DEVELOPMENT_ONLY:
            raise click.ClickException(
                f"`{verb}` needs the development parts ({error.name}), which a production install "
                "leaves out; from a source checkout: pip install -e '.[sandbox]'"
            ) from None
        raise


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(VERBS))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in VERBS:
            module_name, attribute = VERBS[cmd_name].split(":")
            with development_parts(cmd_name):
                module = importlib.import_module(module_name)
            command: click.Command = getattr(module, attribute)
            return command
        return super().get_command(ctx, cmd_name)


@click.group(cls=LazyGroup)
@click.option("-v", "--verbose", count=True, help="More logging (-v INFO, -vv DEBUG).")
def cli(verbose: int) -> None:
    """optout-sync: keeps email unsubscribes in agreement with Salesforce, with proof."""
    level = {0: logging.WARNING, 1: logging.INFO}.get(verbose, logging.DEBUG)
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    # kafka-python's own warnings are worth seeing (a broker gone, a partition without leader).
    logging.getLogger("kafka").setLevel(logging.WARNING if verbose < 2 else logging.DEBUG)
    if verbose < 2:
        for handler in logging.getLogger().handlers:
            handler.addFilter(KAFKA_LOG_FILTER)


class KafkaLogFilter(logging.Filter):
    """kafka-python repeats a warning at every retry and reports its own shutdown as errors: each
    kind of its messages at most once a minute, and none once a stop was asked for."""

    EVERY_S = 60.0
    # Routine, not trouble: a topic created a moment ago has no partition metadata yet.
    ROUTINE = ("No partition metadata for topic",)

    def __init__(self) -> None:
        super().__init__()
        self.stopping = False
        self._last: dict[tuple[str, object], float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith("kafka"):
            return True
        if self.stopping or str(record.msg).startswith(self.ROUTINE):
            return False
        now, kind = time.monotonic(), (record.name, record.msg)
        if now - self._last.get(kind, -self.EVERY_S) < self.EVERY_S:
            return False
        self._last[kind] = now
        return True


KAFKA_LOG_FILTER = KafkaLogFilter()


def main() -> None:
    cli(prog_name="optout-sync")
