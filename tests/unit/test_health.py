"""The health server's own rules: its port setting, a port taken, a readiness probe that fails."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from adapters.settings import ConfigError, Settings, load
from consumers import health


def settings(tmp_path: Path, port: str) -> Settings:
    return load({"OPTOUT_STATE_DIR": str(tmp_path), "OPTOUT_METRICS_PORT": port})


def test_a_bad_port_names_the_setting(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="OPTOUT_METRICS_PORT"):
        settings(tmp_path, "ninety")
    assert load({"OPTOUT_STATE_DIR": str(tmp_path)}).metrics_port is None, "off unless set"


def test_a_port_taken_stops_start_up_naming_the_setting(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        config = settings(tmp_path, str(taken.getsockname()[1]))
        refused = pytest.raises(ConfigError, match=r"OPTOUT_METRICS_PORT: cannot serve on 127\.")
        with refused, health.serving(config, [], lambda: []):
            pass


def test_a_readiness_probe_that_raises_is_not_ready(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = settings(tmp_path, str(port))

    def broken() -> list[str]:
        raise RuntimeError("boom")

    with health.serving(config, [], broken) as served:
        assert served == port
        with pytest.raises(urllib.error.HTTPError) as answer:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5)
        assert answer.value.code == 503
        assert answer.value.read() == b"not ready: readiness check failed: RuntimeError\n"
