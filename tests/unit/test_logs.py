"""The one logging set-up: text or JSON lines, addresses masked at INFO and above, credentials
masked at every level, a bad format refused by its setting's name."""

from __future__ import annotations

import io
import json
import logging
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from adapters.settings import ConfigError, load
from consumers import logs
from consumers.cli import cli


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    """What the configured root handler writes; the root logger restored afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    stream = io.StringIO()
    yield stream
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)


def test_text_lines_mask_addresses_at_info_and_keep_them_at_debug(captured: io.StringIO) -> None:
    logs.configure(2, env={}, stream=captured)
    log = logging.getLogger("consumers.test")
    log.info("looked up %s for %s", "Ada.O'Brien+x@Example.co.uk", "person:p-1")
    log.debug("debugging %s", "ada@example.com")
    lines = captured.getvalue().splitlines()
    assert lines[0].endswith("INFO consumers.test: looked up <address> for person:p-1")
    assert lines[1].endswith("DEBUG consumers.test: debugging ada@example.com")


def test_json_lines_are_objects_with_the_exception_masked_too(captured: io.StringIO) -> None:
    logs.configure(1, env={"OPTOUT_LOG_FORMAT": "json"}, stream=captured)
    log = logging.getLogger("adapters.test")
    try:
        raise ValueError("no record for grace@example.com")
    except ValueError:
        log.exception("push failed for %d records", 3)
    line = json.loads(captured.getvalue())
    assert line["level"] == "ERROR" and line["logger"] == "adapters.test"
    assert line["message"] == "push failed for 3 records"
    assert "ValueError: no record for <address>" in line["exception"]
    assert line["time"].endswith("+00:00") and "grace" not in captured.getvalue()


def test_credentials_are_masked_at_every_level_including_those_read_from_files(
    captured: io.StringIO, tmp_path: Path
) -> None:
    env = {"SALESFORCE_SECURITY_TOKEN": "TOKEN-FROM-ENV", "OPTOUT_STATE_DIR": str(tmp_path)}
    logs.configure(2, env=env, stream=captured)
    secret_file = tmp_path / "password"
    secret_file.write_text("password-from-a-file\n")
    logs.hide_settings(
        load(
            {
                **env,
                "SALESFORCE_USERNAME": "sync@example.com",
                "SALESFORCE_PASSWORD_FILE": str(secret_file),
                "OPTOUT_DATABASE_URL": "postgresql://optout:db-pass-word@127.0.0.1:5432/optout",
            }
        )
    )
    log = logging.getLogger("adapters.test")
    log.debug("login with TOKEN-FROM-ENV and password-from-a-file")
    log.warning("cannot reach postgresql://optout:db-pass-word@127.0.0.1:5432/optout")
    text = captured.getvalue()
    for secret in ("TOKEN-FROM-ENV", "password-from-a-file", "db-pass-word"):
        assert secret not in text
    assert "login with *** and ***" in text
    assert "postgresql://optout:***@127.0.0.1:5432/optout" in text


def test_a_short_value_is_not_taken_for_a_credential() -> None:
    assert logs.secrets_in({"X_TOKEN": "abc", "Y_SECRET": "long-enough", "PATH": "/usr/bin"}) == [
        "long-enough"
    ]


def test_a_bad_log_format_stops_start_up_naming_the_setting() -> None:
    with pytest.raises(ConfigError, match="OPTOUT_LOG_FORMAT"):
        logs.log_format({"OPTOUT_LOG_FORMAT": "xml"})
    result = CliRunner().invoke(cli, ["person", "--help"], env={"OPTOUT_LOG_FORMAT": "xml"})
    assert result.exit_code != 0
    assert "OPTOUT_LOG_FORMAT must be one of text, json, not 'xml'" in result.output


def test_kafka_pythons_routine_lines_are_dropped_and_its_repeats_limited(
    captured: io.StringIO,
) -> None:
    logs.configure(1, env={}, stream=captured)
    selector = logging.getLogger("kafka.net.selector")
    selector.warning("Task <kafka.net.selector.Task object at 0x7f> ran for 0.146s (>0.100s ...")
    cluster, kind = logging.getLogger("kafka.cluster"), f"No node available ({uuid.uuid4()})"
    for _ in range(3):
        cluster.warning(kind)
    assert captured.getvalue().count("WARNING") == 1, captured.getvalue()
    assert kind in captured.getvalue()
