"""`optout-sync sandbox --print-env` prints the SALESFORCE_* settings the engine reads: evaluated by
a shell, they let the engine's own Salesforce adapter log in to the sandbox."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests.e2e.cli import REPO

pytestmark = [pytest.mark.sandbox]
ENGINE_NAMES = {
    "SALESFORCE_USERNAME",
    "SALESFORCE_PASSWORD",
    "SALESFORCE_SECURITY_TOKEN",
    "SALESFORCE_DOMAIN",
    "SALESFORCE_CA_BUNDLE",
}
# What a program does with those settings: log in, check the org, print the budget.
LOG_IN = (
    "from adapters import salesforce, settings; "
    "check = salesforce.connect(settings.load()).check_org(); "
    "print(check.instance, check.field_present, check.api_max)"
)


def _lines(process: subprocess.Popen[str], count: int, timeout_s: float) -> list[str]:
    """The first `count` lines the process prints; it is killed if they take over `timeout_s`."""
    assert process.stdout is not None
    watchdog = threading.Timer(timeout_s, process.kill)
    watchdog.start()
    try:
        lines = [process.stdout.readline() for _ in range(count)]
    finally:
        watchdog.cancel()
    assert all(lines), f"within {timeout_s:.0f}s the sandbox printed only {lines}"
    return lines


def test_print_env_names_the_settings_the_engine_reads(tmp_path: Path) -> None:
    outside = {name: value for name, value in os.environ.items() if not name.startswith("SALES")}
    env = {**outside, "OPTOUT_STATE_DIR": str(tmp_path)}
    sandbox = subprocess.Popen(
        [sys.executable, "-m", "consumers", "sandbox", "--port", "0", "--print-env"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        exports = _lines(sandbox, len(ENGINE_NAMES), timeout_s=120)
        assert {line.split()[1].split("=")[0] for line in exports} == ENGINE_NAMES
        assert all(line.startswith("export ") for line in exports)
        script = tmp_path / "sandbox.env"
        script.write_text("".join(exports))
        logged_in = subprocess.run(
            ["bash", "-c", f'eval "$(cat {script})" && exec "$0" -c "$1"', sys.executable, LOG_IN],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        sandbox.terminate()
        sandbox.wait(timeout=60)
    assert logged_in.returncode == 0, logged_in.stderr
    instance, *_ = logged_in.stdout.split()
    assert instance.startswith("127.0.0.1:"), logged_in.stdout
    assert "'Contact': True" in logged_in.stdout and "'Lead': True" in logged_in.stdout
