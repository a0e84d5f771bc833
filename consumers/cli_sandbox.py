"""`optout-sync sandbox`: serve a local Salesforce org over HTTPS until interrupted."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import click

from adapters import settings
from consumers.cli import development_parts


@click.command("sandbox")
@click.option(
    "--host", default="127.0.0.1", show_default=True, help="Address to bind; keep it local."
)
@click.option(
    "--port",
    default=8443,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="0 picks a free port.",
)
@click.option(
    "--seed-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="JSON with contacts and leads.",
)
@click.option(
    "--generate",
    "generate",
    default=0,
    type=click.IntRange(0),
    help="Generate N contacts and N leads.",
)
@click.option(
    "--snapshot",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Load from / save to this file.",
)
@click.option("--daily-api-limit", default=100_000, show_default=True, type=click.IntRange(1))
@click.option(
    "--marketo-field",
    default="mkto_si__Marketo_Sales_Opt_Out__c",
    show_default=True,
    help="API name of the Marketo Sales Opt Out checkbox.",
)
@click.option(
    "--without-marketo-field", is_flag=True, help="The org has no Marketo Sales Opt Out field."
)
@click.option(
    "--enable-admin",
    is_flag=True,
    help="Serve the /__admin API (faults, sessions, usage, call log).",
)
@click.option(
    "--print-env",
    is_flag=True,
    help="Print the engine's SALESFORCE_* settings for this org as shell exports.",
)
@click.option(
    "--json", "as_json", is_flag=True, help="Print the client settings as one JSON line on stdout."
)
def sandbox(
    host: str,
    port: int,
    seed_file: Path | None,
    generate: int,
    snapshot: Path | None,
    daily_api_limit: int,
    marketo_field: str,
    without_marketo_field: bool,
    enable_admin: bool,
    print_env: bool,
    as_json: bool,
) -> None:
    """Serve a Salesforce sandbox org that the unmodified simple-salesforce client can use.

    Clients log in with domain="HOST:PORT/sandbox" (SOAP) or use the instance URL with a session
    id, and give simple-salesforce a requests.Session whose verify is the printed CA path.
    """
    with development_parts("sandbox"):
        from sandbox import SandboxConfig, prepare  # imported here so `--help` stays fast

    try:
        tls_dir = settings.load().state_dir / "sandbox"
    except settings.ConfigError as error:
        raise click.ClickException(str(error)) from None
    config = SandboxConfig(
        host=host,
        port=port,
        seed_file=seed_file,
        generate=generate,
        snapshot_file=snapshot,
        daily_api_limit=daily_api_limit,
        marketo_field=None if without_marketo_field else marketo_field,
        admin_enabled=enable_admin,
        tls_dir=tls_dir,
    )
    try:
        server = prepare(config)
    except (OSError, ValueError) as error:
        raise click.ClickException(f"cannot start the sandbox: {error}") from None
    env = server.env()
    if as_json:
        click.echo(json.dumps(env))
    elif print_env:
        for name, value in env.items():
            click.echo(f"export {name}={shlex.quote(value)}")
    counts = server.store.count()
    click.echo(
        f"sandbox org at {server.url} ({counts['Contact']} contacts, {counts['Lead']} leads; "
        f"admin {'on' if enable_admin else 'off'}); CA certificate: {server.ca_path}",
        err=True,
    )
    sys.stdout.flush()
    server.serve_forever()
