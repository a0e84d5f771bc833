"""A Kafka broker of a test's own — its own ports and state dir — for tests that pause, stop or
restart a broker: the shared one the rest of the suite uses is never touched."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
from pathlib import Path

from devservices import broker as local_kafka
from devservices.settings import ServiceSettings as Settings
from devservices.settings import load


def free_port_pair() -> int:
    """A port P with P+1 also free (the broker takes P, its controller P+1)."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        if port < 65535:
            with socket.socket() as second:
                try:
                    second.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
            return port
    raise RuntimeError("no two consecutive free ports")


class PrivateBroker:
    def __init__(self, state_dir: Path) -> None:
        env = {"OPTOUT_STATE_DIR": str(state_dir), "OPTOUT_KAFKA_PORT": str(free_port_pair())}
        if os.environ.get("OPTOUT_CACHE_DIR"):  # the jars are shared, not downloaded again
            env["OPTOUT_CACHE_DIR"] = os.environ["OPTOUT_CACHE_DIR"]
        self.settings: Settings = load(env)
        self.bootstrap = local_kafka.bootstrap(self.settings)
        self.pid: int | None = None

    def start(self) -> None:
        self.pid = local_kafka.up(self.settings).pid

    def stop(self) -> None:
        """A real stop: the broker's controlled shutdown, its process gone."""
        local_kafka.down(self.settings)
        self.pid = None

    def pause(self) -> None:
        assert self.pid is not None
        os.kill(self.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.pid is not None
        os.kill(self.pid, signal.SIGCONT)

    def close(self) -> None:
        """Whatever state the test left it in."""
        if self.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGCONT)
        local_kafka.down(self.settings)

    def log_tail(self) -> str:
        path = Path(local_kafka.status(self.settings).log_path)
        lines = path.read_text(errors="replace").splitlines() if path.exists() else []
        return f"--- last lines of {path} ---\n" + "\n".join(lines[-20:])
