"""One logging set-up for every process: lines for people or JSON for machines, and never an
address or a credential at INFO or above, whoever wrote the line.

The engine keeps addresses out of its messages; the mask is the second line of defence, for the
libraries' messages and the exceptions' texts that quote what they were given.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import time
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import TextIO
from urllib.parse import urlsplit

import msgspec

from adapters.settings import ConfigError, Secret, Settings

LOG_FORMAT = "OPTOUT_LOG_FORMAT"
FORMATS = ("text", "json")
TEXT_LAYOUT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# Wide on purpose: a false positive costs a masked word, a miss an address in a log.
_ADDRESS = re.compile(r"[\w.!#$%&'*+/=?^`{|}~-]+@(?:[\w-]+\.)+[^\W\d_]{2,}\b")
ADDRESS_MASK = "<address>"
SECRET_MASK = "***"  # noqa: S105 - what a credential is replaced with
# Environment variables whose values are credentials, by the ending of their names.
_SECRET_NAME = re.compile(r"(PASSWORD|TOKEN|SECRET|_KEY)$")
_SHORTEST_SECRET = 6  # shorter values would mask ordinary words


def log_format(env: Mapping[str, str]) -> str:
    value = env.get(LOG_FORMAT, "text").strip().lower() or "text"
    if value not in FORMATS:
        raise ConfigError(f"{LOG_FORMAT} must be one of {', '.join(FORMATS)}, not {value!r}")
    return value


def secrets_in(env: Mapping[str, str]) -> list[str]:
    """Credential values given in the environment, to be masked wherever they appear."""
    return [
        value
        for name, value in env.items()
        if _SECRET_NAME.search(name) and len(value) >= _SHORTEST_SECRET
    ]


class Masking(logging.Formatter):
    """Renders a record, then masks addresses and the known credentials at INFO and above."""

    def __init__(self, fmt: str | None = None, *, secrets: Iterable[str] = ()) -> None:
        super().__init__(fmt)
        self.hide(secrets)

    def hide(self, secrets: Iterable[str]) -> None:
        known = sorted({*getattr(self, "_secret_values", ()), *secrets}, key=len, reverse=True)
        self._secret_values = known
        self._secrets = re.compile("|".join(map(re.escape, known))) if known else None

    def mask(self, text: str, level: int) -> str:
        if self._secrets is not None:
            text = self._secrets.sub(SECRET_MASK, text)  # at every level: never a credential
        if level >= logging.INFO:
            text = _ADDRESS.sub(ADDRESS_MASK, text)
        return text

    def format(self, record: logging.LogRecord) -> str:
        return self.mask(super().format(record), record.levelno)


class JsonLine(Masking):
    """One JSON object per line: time (UTC, ISO 8601), level, logger, message, and the
    exception's traceback when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exception"] = record.exc_text
        return self.mask(msgspec.json.encode(line).decode(), record.levelno)


class KafkaLogFilter(logging.Filter):
    """kafka-python repeats a warning at every retry and reports its own shutdown as errors: each
    kind of its messages at most once a minute, and none once a stop was asked for."""

    EVERY_S = 60.0
    # Routine, not trouble: a topic created a moment ago has no partition metadata yet; its
    # event loop's own slow-step diagnostic (>100 ms) fires whenever the machine is busy.
    ROUTINE = ("No partition metadata for topic", "Task <kafka.net.selector.Task")

    def __init__(self) -> None:
        super().__init__()
        self.stopping = False
        self._last: dict[tuple[str, object], float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith("kafka"):
            return True
        if self.stopping or str(record.msg).startswith(self.ROUTINE):
            return False
        now, kind = time.monotonic(), (record.name, record.msg)
        if now - self._last.get(kind, -self.EVERY_S) < self.EVERY_S:
            return False
        self._last[kind] = now
        return True


KAFKA_LOG_FILTER = KafkaLogFilter()
_notes = logging.getLogger("optout_sync")  # what the command tells its user on stderr
_json = False  # set by configure: JSON lines on stderr, nothing else


def say(message: str, level: int = logging.INFO) -> None:
    """A note to the user on stderr (a topic created, a broker reused): a plain line, or in JSON
    mode a line shown at every verbosity, so that stderr stays machine-readable."""
    if _json:
        _notes.log(level, message)
    else:
        print(message, file=sys.stderr, flush=True)


def refuse(message: str) -> bool:
    """The command's final error in JSON mode, as an ERROR line; False in text mode (click then
    shows it as usual)."""
    if _json:
        _notes.error(message)
    return _json


def configure(
    verbose: int, env: Mapping[str, str] | None = None, stream: TextIO | None = None
) -> None:
    """The root logger's one handler (stderr): WARNING, -v INFO, -vv DEBUG (kafka-python's own
    DEBUG only then); the format from OPTOUT_LOG_FORMAT."""
    global _json
    env = os.environ if env is None else env
    _json = log_format(env) == "json"
    level = {0: logging.WARNING, 1: logging.INFO}.get(verbose, logging.DEBUG)
    secrets = secrets_in(env)
    formatter = JsonLine(secrets=secrets) if _json else Masking(TEXT_LAYOUT, secrets=secrets)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(formatter)
    if verbose < 2:
        handler.addFilter(KAFKA_LOG_FILTER)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # kafka-python's own warnings are worth seeing (a broker gone, a partition without leader).
    logging.getLogger("kafka").setLevel(logging.WARNING if verbose < 2 else logging.DEBUG)
    _notes.setLevel(logging.INFO)


def hide(*secrets: str) -> None:
    """Masks credentials learnt after start-up (read from a secret file, issued by a login)."""
    values = [value for value in secrets if value and len(value) >= _SHORTEST_SECRET]
    for handler in logging.getLogger().handlers:
        if isinstance(handler.formatter, Masking):
            handler.formatter.hide(values)


def hide_settings(config: Settings) -> None:
    """Masks the credentials the settings hold (some come from secret files, not the
    environment); of the database URL, only its password."""
    values = [
        value
        for name in config.__struct_fields__
        if isinstance(value := getattr(config, name), Secret) and name != "database_url"
    ]
    hide(*values, urlsplit(config.database_url).password or "")
