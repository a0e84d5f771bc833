"""The `optout-sync` command line: one group, each verb loaded from its own module on demand."""

from __future__ import annotations

import importlib
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import click

# Verb name -> "module:attribute" of a click command; loaded only when used, so `--help` is fast.
VERBS: dict[str, str] = {
    "services": "consumers.cli_services:services",
    "sandbox": "consumers.cli_sandbox:sandbox",
    "init": "consumers.cli_init:init",
    "ingest": "consumers.cli_ingest:ingest",
    "person": "consumers.cli_person:person",
    "forget": "consumers.cli_forget:forget",
    "dlq": "consumers.cli_dlq:dlq",
    "demo": "consumers.cli_demo:demo",
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
    # kafka-python logs routine reconnects and shutdown at ERROR; show them only when asked.
    logging.getLogger("kafka").setLevel(logging.CRITICAL if verbose < 2 else logging.DEBUG)


def main() -> None:
    cli(prog_name="optout-sync")
