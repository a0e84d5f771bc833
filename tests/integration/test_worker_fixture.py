"""The `ingest_workers` fixture ends every worker a test started, even when the test fails."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from adapters.settings import Settings
from devservices.process import process_start_time
from tests.integration.ingest_harness import REPO, env_of, isolated_settings

pytestmark = [pytest.mark.kafka]

# Run by a pytest of its own: the first test starts two workers and fails on purpose while they
# are busy; the second, run by the same process once the first is torn down (so before anything
# could end the workers for the process's exit), checks that they are gone.
FAILS_MID_STREAM = """
import os
from pathlib import Path

from devservices.process import process_start_time
from adapters.settings import load
from tests.factories import good_change
from adapters.inbound import PersonRef
from tests.integration.ingest_harness import keyed, produce, reader, wait_for


def test_fails_mid_stream(ingest_workers):
    config = load()
    produce(config, keyed(good_change(person=PersonRef(person_id=f"p-{i}")) for i in range(2000)))
    workers = [ingest_workers.start(config), ingest_workers.start(config)]
    Path(os.environ["WORKERS_FILE"]).write_text(
        "\\n".join(f"{w.pid} {process_start_time(w.pid)}" for w in workers)
    )
    store = reader(config)
    names = [f"{config.topic_inbound}:{p}" for p in range(4)]
    wait_for(
        lambda: sum(n + 1 for n in store.positions(names).values()) > 0,
        300,
        "the workers to store something",
    )
    assert all(worker.running() for worker in workers)
    raise AssertionError("failing on purpose, mid-stream")


def test_the_workers_of_the_failed_test_are_gone():
    for line in Path(os.environ["WORKERS_FILE"]).read_text().splitlines():
        pid, start_time = line.split()
        assert str(process_start_time(int(pid))) != start_time, f"worker {pid} is still running"
"""


def test_a_test_that_fails_mid_stream_leaves_no_worker_behind(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    config: Settings = isolated_settings(
        kafka_bootstrap, f"sqlite:///{tmp_path / 'events.sqlite'}", tmp_path
    )
    inner = tmp_path / "inner"
    inner.mkdir()
    (inner / "test_fails_mid_stream.py").write_text(FAILS_MID_STREAM)
    workers_file = tmp_path / "workers.txt"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "tests.integration.ingest_harness",  # the fixture, as the suite's conftest has it
            "-p",
            "no:cacheprovider",
            "--rootdir",
            str(inner),
            "-q",
            str(inner),
        ],
        cwd=REPO,
        env=env_of(config, WORKERS_FILE=str(workers_file)),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "failing on purpose, mid-stream" in result.stdout
    assert "1 failed, 1 passed" in result.stdout, result.stdout
    started = [line.split() for line in workers_file.read_text().splitlines()]
    assert len(started) == 2
    for pid, start_time in started:
        # Gone: no process with that pid, or another one that reused it.
        assert str(process_start_time(int(pid))) != start_time, f"worker {pid} is still running"
