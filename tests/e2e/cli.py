"""Running `optout-sync` as a user does, in its own process, on topics and a group of its own."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.kafka_scratch import scratch_suffix

REPO = Path(__file__).resolve().parents[2]


def optout_sync(
    *args: str, env: dict[str, str], timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "consumers", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def isolated_env(kafka_bootstrap: str, state_dir: Path, **extra: str) -> dict[str, str]:
    """The environment of a run with topics and a consumer group nobody else uses."""
    suffix = scratch_suffix(kafka_bootstrap, 8)
    return {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "OPTOUT_STATE_DIR": str(state_dir),
        "OPTOUT_TOPIC_INBOUND": f"e2e.changes.{suffix}",
        "OPTOUT_TOPIC_STATE": f"e2e.state.{suffix}",
        "OPTOUT_CONSUMER_GROUP": f"e2e-{suffix}",
        "COLUMNS": "160",
        **extra,
    }
