"""One active process of a kind per store (the live pusher): a lock that dies with its holder.

PostgreSQL: a session advisory lock on a connection of its own, released by the server when the
holder's session ends, however it ends. SQLite: an exclusive `flock` on a file beside the
database, released by the kernel when the holder's process ends (SQLite is one machine's store).
A second process waits and takes over when the first dies.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import psycopg

from adapters.settings import ConfigError

CHECK_EVERY_S = 5.0  # how often a holder checks that its PostgreSQL session (and lock) lives


class ProcessLock:
    """`acquire` waits for the lock; `held` says whether it is still held (cheaply)."""

    def __init__(self, database_url: str, name: str) -> None:
        self.database_url = database_url
        self.name = name
        self._file: int | None = None
        self._connection: psycopg.Connection[Any] | None = None
        self._checked_at = 0.0
        url = urlsplit(database_url)
        self._postgres = url.scheme in ("postgresql", "postgres")
        if not self._postgres and url.scheme != "sqlite":
            raise ConfigError(f"OPTOUT_DATABASE_URL: unsupported scheme {url.scheme!r}")
        # A stable 63-bit key from the name: the same on every machine and every run.
        self._key = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big") >> 1

    def try_acquire(self) -> bool:
        return self._try_postgres() if self._postgres else self._try_file()

    def acquire(self, stopping: threading.Event, poll_s: float = 1.0) -> bool:
        """Waits until the lock is held (True) or `stopping` is set (False)."""
        while not stopping.is_set():
            if self.try_acquire():
                return True
            stopping.wait(poll_s)
        return False

    def held(self) -> bool:
        if not self._postgres:
            return self._file is not None
        if self._connection is None:
            return False
        if time.monotonic() - self._checked_at < CHECK_EVERY_S:
            return True
        try:  # the lock is never released while the session lives: a live session holds it
            self._connection.execute("SELECT 1")
        except psycopg.Error:
            self.release()
            return False
        self._checked_at = time.monotonic()
        return True

    def release(self) -> None:
        if self._file is not None:
            os.close(self._file)  # closing the descriptor drops the flock
            self._file = None
        if self._connection is not None:
            with contextlib.suppress(psycopg.Error):
                self._connection.close()  # ending the session drops the advisory lock
            self._connection = None

    def _try_postgres(self) -> bool:
        if self._connection is None:
            self._connection = psycopg.connect(
                self.database_url, autocommit=True, connect_timeout=10
            )
        row = self._connection.execute("SELECT pg_try_advisory_lock(%s)", [self._key]).fetchone()
        if row and row[0]:
            self._checked_at = time.monotonic()
            return True
        return False

    def _try_file(self) -> bool:
        path = Path(unquote(self.database_url[len("sqlite:///") :]) + f".{self.name}.lock")
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(descriptor)
            return False
        self._file = descriptor
        return True
