"""The demo and the local broker it leaves running: reused by the next run, a stale pid file
replaced, a port taken by something else refused with a clear message, and the demo says at its
end that the broker keeps running and how to stop it. On a private broker (own state dir and
ports), stopped at the end, so the broker the other tests share is never touched."""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest

from devservices import broker as local_kafka
from devservices.process import RecordedProcess, process_start_time
from devservices.settings import load
from tests.e2e.cli import optout_sync
from tests.integration.private_broker import free_port_pair

pytestmark = [pytest.mark.kafka]


@pytest.fixture
def private_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    env = {
        **os.environ,
        "OPTOUT_STATE_DIR": str(tmp_path / "state"),
        "OPTOUT_KAFKA_PORT": str(free_port_pair()),
        "COLUMNS": "160",
    }
    env.pop("KAFKA_BOOTSTRAP_SERVERS", None)
    yield env
    stopped = optout_sync("services", "down", "--no-postgres", env=env, timeout=300)
    assert stopped.returncode == 0, stopped.stderr


def _gone_pid() -> int:
    """The pid of a process that has exited."""
    probe = subprocess.Popen(["true"])
    probe.wait()
    return probe.pid


def test_the_demo_reuses_its_broker_and_says_how_to_stop_it(private_env: dict[str, str]) -> None:
    config = load(private_env)
    pid_file = local_kafka.paths(config).pid

    # Something else on the broker's port: refused before anything starts, naming the setting.
    with socket.create_server(("127.0.0.1", config.kafka_port)):
        taken = optout_sync("demo", "--timeout", "300", env=private_env, timeout=400)
    assert taken.returncode == 1 and "Traceback" not in taken.stderr
    assert f"port {config.kafka_port}" in taken.stderr and "OPTOUT_KAFKA_PORT" in taken.stderr
    assert not pid_file.exists()

    # A pid file left by a broker that is gone (a reboot, a crash): a new broker replaces it.
    pid_file.parent.mkdir(parents=True, exist_ok=True)
    gone = RecordedProcess(pid=_gone_pid(), start_time=1, command="java")
    pid_file.write_bytes(msgspec.json.encode(gone))
    first = optout_sync("demo", "--timeout", "300", env=private_env, timeout=400)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "names a process that is gone" in first.stderr
    broker = local_kafka.status(config)
    assert broker.state == "running" and broker.pid != gone.pid
    assert f"The local Kafka broker keeps running (pid {broker.pid}" in first.stdout
    assert "Stop it with: optout-sync services down --no-postgres" in first.stdout

    # The next run reuses it.
    second = optout_sync("demo", "--timeout", "300", env=private_env, timeout=400)
    assert second.returncode == 0, second.stdout + second.stderr
    assert f"using the local Kafka broker already running (pid {broker.pid}" in second.stderr
    assert "starting the local Kafka broker" not in second.stderr
    assert local_kafka.status(config).pid == broker.pid
    assert "keeps running" in second.stdout

    # A broker whose pid file is gone is not ours to run: the message says how to use it.
    record = pid_file.read_bytes()
    pid_file.unlink()
    try:
        orphan = optout_sync("demo", "--timeout", "300", env=private_env, timeout=400)
    finally:
        pid_file.write_bytes(record)  # so that the fixture stops it
    assert orphan.returncode == 1 and "Traceback" not in orphan.stderr
    assert f"a Kafka broker already answers on 127.0.0.1:{config.kafka_port}" in orphan.stderr
    assert f"KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:{config.kafka_port}" in orphan.stderr
    assert process_start_time(broker.pid) is not None, "the running broker was left alone"
