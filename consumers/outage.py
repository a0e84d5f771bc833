"""A dependency (the broker, the event store) that stopped answering: how long to wait before the
next try, and what the log says about it — at WARNING when it starts, now and then while it
lasts, and when it ends, never a line per retry."""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

log = logging.getLogger(__name__)

FIRST_BACKOFF_S = 0.5
MAX_BACKOFF_S = 5.0
REPORT_EVERY_S = 30.0
_EMAIL_LIKE = re.compile(r"[^\s@<>()\"'`]+@[^\s@<>()\"'`]+")


def describe(error: BaseException, limit: int = 300) -> str:
    """An error as one line for a log or a dead letter: its type and message, with anything
    that looks like an email address taken out (a message may quote a value)."""
    name = type(error).__name__
    text = " ".join(str(error).split()) or "(no message)"
    text = text.removeprefix(f"{name}: ")  # Kafka's errors name themselves
    text = _EMAIL_LIKE.sub("<redacted>", text)
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return f"{name}: {text}"


class Outage:
    """One dependency's reachability, as seen by the loop that uses it."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.since: float | None = None
        self.backoff_s = FIRST_BACKOFF_S
        self._reported_at = 0.0

    @property
    def ongoing(self) -> bool:
        return self.since is not None

    def failed(self, error: BaseException) -> float:
        """Notes a failure; returns how long to wait before the next try."""
        now = time.monotonic()
        if self.since is None:
            self.since, self.backoff_s, self._reported_at = now, FIRST_BACKOFF_S, now
            log.warning("%s does not answer (%s); waiting and retrying", self.what, describe(error))
        else:
            self.backoff_s = min(MAX_BACKOFF_S, self.backoff_s * 2)
            if now - self._reported_at >= REPORT_EVERY_S:
                self._reported_at = now
                log.warning(
                    "%s has not answered for %.0f s (%s); still waiting, retrying every %.0f s",
                    self.what,
                    now - self.since,
                    describe(error),
                    self.backoff_s,
                )
        return self.backoff_s

    def answered(self) -> None:
        if self.since is not None:
            log.warning("%s answers again after %.0f s", self.what, time.monotonic() - self.since)
            self.since = None
            self.backoff_s = FIRST_BACKOFF_S


class StallWatch:
    """Says at WARNING when a call has not returned for a while: a server that stopped answering
    mid-call (a paused database) leaves its caller blocked, unable to say so itself."""

    def __init__(self, after_s: float = 15.0) -> None:
        self.after_s = after_s
        self._call: tuple[str, float] | None = None
        self._done = threading.Event()
        self._thread: threading.Thread | None = None

    @contextmanager
    def call(self, what: str) -> Iterator[None]:
        if self._thread is None:
            self._thread = threading.Thread(target=self._watch, name="stall-watch", daemon=True)
            self._thread.start()
        self._call = (what, time.monotonic())
        try:
            yield
        finally:
            self._call = None

    def close(self) -> None:
        self._done.set()

    def stalled(self) -> tuple[str, float] | None:
        """The call in hand and how long it has run, once that is past `after_s`."""
        call = self._call
        if call is None:
            return None
        running_s = time.monotonic() - call[1]
        return (call[0], running_s) if running_s >= self.after_s else None

    def _watch(self) -> None:
        reported: tuple[str, float] | None = None
        reported_at = 0.0
        while not self._done.wait(1.0):
            call, now = self._call, time.monotonic()
            if call is None or now - call[1] < self.after_s:
                continue
            if call is not reported or now - reported_at >= REPORT_EVERY_S:
                reported, reported_at = call, now
                log.warning("%s has not returned for %.0f s; still waiting", call[0], now - call[1])
