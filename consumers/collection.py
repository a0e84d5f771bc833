"""Cyclic garbage collection for the ingest loop, whose survivors are long-lived: the writer's
cache of persons grows to hundreds of thousands of objects, and the collector scanned them again
and again (20 to 26% of the ingest's time in the bench's stage table).

What survives a poll is frozen out of the collector's scans (`gc.freeze`: the objects move to
the permanent generation; reference counting still frees them when the cache lets go). Every few
minutes a full collection runs over everything, so that a reference cycle among them is still
reclaimed: memory stays bounded by the cache, as before.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable

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

    def after_poll(self) -> None:
        """The poll's survivors are the cache's: out of the scans from now on."""
        now = self.clock()
        if now - self.last_full >= self.full_every_s:
            gc.unfreeze()
            gc.collect()
            self.last_full = now
        gc.freeze()

    def close(self) -> None:
        gc.unfreeze()
