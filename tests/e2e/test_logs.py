"""A full run's logs, as machines read them: every line a JSON object, INFO lines from every
stage, and no address of the stream and no credential anywhere in them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.e2e.cli import isolated_env, optout_sync

pytestmark = [pytest.mark.kafka]

ADDRESSES = ("ada@example.com", "grace@example.com")
SANDBOX_CREDENTIALS = ("sandbox-password", "SANDBOXTOKEN")  # sandbox/config.py's defaults


def test_a_full_run_logs_json_lines_without_an_address_or_a_credential(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    env = isolated_env(kafka_bootstrap, tmp_path, OPTOUT_LOG_FORMAT="json")
    runs = [
        optout_sync("-v", "demo", "--timeout", "300", env=env, timeout=400),
        optout_sync("-v", "person", "Ada@Example.com", env=env),
        optout_sync("-v", "dlq", "list", env=env),
    ]
    for run in runs:
        assert run.returncode == 0, run.stdout + run.stderr
    assert "ada@example.com" in runs[1].stdout.lower(), "the operator's answer shows the address"

    lines = [json.loads(line) for run in runs for line in run.stderr.splitlines() if line]
    loggers = {line["logger"] for line in lines if line["level"] == "INFO"}
    assert "consumers.slice_writer" in loggers, f"INFO lines are there to scan: {loggers}"
    text = "\n".join(run.stderr for run in runs).lower()
    for address in ADDRESSES:
        assert address not in text
    credentials = [*SANDBOX_CREDENTIALS, (tmp_path / "address.key").read_text().strip()]
    for credential in credentials:
        assert credential.lower() not in text
