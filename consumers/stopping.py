"""How every long-running process stops: the first SIGTERM/SIGINT asks it to stop (it stores what
it safely can and closes its clients), and whatever still blocks then (a paused broker, database
or Salesforce) does not hold the exit past a deadline; a second signal exits at once. Exiting at
any instant is safe: a slice's changes, or a push batch's outcomes, are one transaction with
their position."""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable
from types import FrameType

import click

from consumers.logs import KAFKA_LOG_FILTER

log = logging.getLogger(__name__)
STOP_DEADLINE_S = 12.0


def stop_on_signals(stop: Callable[[], None]) -> None:
    """First SIGTERM/SIGINT: `stop()`, with a deadline; a second one: exit now."""
    stopping = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        code = 128 + signum
        if stopping.is_set():
            log.warning("second %s: exiting now", signal.Signals(signum).name)
            os._exit(code)
        stopping.set()
        KAFKA_LOG_FILTER.stopping = True  # its complaints about the closing connections
        log.warning("%s: stopping", signal.Signals(signum).name)
        stop()
        threading.Thread(
            target=_exit_after, args=(code,), name="stop-deadline", daemon=True
        ).start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)


def _exit_after(code: int) -> None:
    threading.Event().wait(STOP_DEADLINE_S)
    log.warning(
        "not stopped %.0f s after the signal (a broker, store or Salesforce not answering); "
        "exiting anyway",
        STOP_DEADLINE_S,
    )
    os._exit(code)


def idle_exit_option(without: str) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Every long-running verb's `--idle-exit SECONDS`: for scripts and tests, an exit after so
    long `without` anything to do; by default the process runs until SIGTERM/SIGINT."""
    return click.option(
        "--idle-exit",
        type=float,
        default=None,
        metavar="SECONDS",
        help=f"Exit after this long {without} (default: run until SIGTERM/SIGINT).",
    )
