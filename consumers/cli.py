"""The `optout-sync` command line: one group, each verb loaded from its own module on demand."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import click

from adapters.settings import ConfigError
from consumers import logs

# Verb name -> "module:attribute" of a click command; loaded only when used, so `--help` is fast.
VERBS: dict[str, str] = {
    "services": "consumers.cli_services:services",
    "sandbox": "consumers.cli_sandbox:sandbox",
    "init": "consumers.cli_init:init",
    "ingest": "consumers.cli_ingest:ingest",
    "push": "consumers.cli_push:push",
    "publish": "consumers.cli_publish:publish",
    "nightly": "consumers.cli_nightly:nightly",
    "person": "consumers.cli_person:person",
    "forget": "consumers.cli_forget:forget",
    "dlq": "consumers.cli_dlq:dlq",
    "demo": "consumers.cli_demo:demo",
    # issue 12, compliance: point-in-time replay and the tamper-evident log
    "replay": "consumers.cli_replay:replay",
    "verify": "consumers.cli_verify:verify_log",
    # issue 12: the read models and the audit trail
    "projections": "consumers.cli_projections:projections",
    "audit": "consumers.cli_audit:audit",
    "status": "consumers.cli_status:status",  # issue 14: the operator's status
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
    try:
        logs.configure(verbose)
    except ConfigError as error:
        raise click.ClickException(f"configuration: {error}") from None


def main() -> None:
    """Runs a verb; in JSON log mode its final error is a JSON line too."""
    try:
        code = cli.main(prog_name="optout-sync", standalone_mode=False)
    except click.ClickException as error:
        if not logs.refuse(error.format_message()):
            error.show()
        sys.exit(error.exit_code)
    except click.Abort:
        if not logs.refuse("aborted"):
            click.echo("Aborted!", err=True)
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)
