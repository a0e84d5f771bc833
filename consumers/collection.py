"""Cyclic garbage collection for the ingest loop, whose survivors are long-lived: the writer's
cache of persons grows to hundreds of thousands of objects, and the collector scanned them again
and again (20 to 26% of the ingest's time in the bench's stage table).

While a poll is stored the collector is off (`storing`): a change makes no reference cycles
(checked: a full collection after 60,000 changes found 1,262 unreachable objects, all from
start-up), and its objects die by reference counting, so the collector's runs during a poll only
scanned the poll's records and changes again and again. After the poll, one collection of the
young objects reclaims any cycle the poll made (an exception's traceback, say).

What survives a poll is then frozen out of the collector's scans (`gc.freeze`: the objects move
to the permanent generation; reference counting still frees them when the cache lets go). Every
few minutes a full collection runs over everything, so that a reference cycle among them is
still reclaimed: memory stays bounded by the cache, as before.
"""

from __future__ import annotations

import contextlib
import gc
import time
from collections.abc import Callable, Iterator

FULL_COLLECTION_EVERY_S = 300.0


class Collections:
    def __init__(
        self,
        full_every_s: float = FULL_COLLECTION_EVERY_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.full_every_s = full_every_s
        self.clock = clock
        self.last_full = clock()

    @contextlib.contextmanager
    def storing(self) -> Iterator[None]:
        """The collector is off while a poll is stored."""
        enabled = gc.isenabled()
        gc.disable()
        try:
            yield
        finally:
            if enabled:
                gc.enable()

    def after_poll(self) -> None:
        """The poll's cycles are reclaimed; its survivors are the cache's: out of the scans from
        now on."""
        now = self.clock()
        if now - self.last_full >= self.full_every_s:
            gc.unfreeze()
            gc.collect()
            self.last_full = now
        else:
            gc.collect(0)  # what the poll left: its survivors and any cycle it made
        gc.freeze()

    def close(self) -> None:
        gc.unfreeze()
