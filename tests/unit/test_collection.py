"""The ingest loop's garbage collection: survivors leave the scans, cycles are still reclaimed."""

from __future__ import annotations

import gc
import weakref

from consumers.collection import Collections


class _Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the cyclic collector frees it


def test_a_frozen_cycle_is_reclaimed_by_the_next_full_collection() -> None:
    now = [0.0]
    collections = Collections(full_every_s=300.0, clock=lambda: now[0])
    try:
        node = _Node()
        alive = weakref.ref(node)
        collections.after_poll()  # the node survived a poll: frozen
        del node
        gc.collect()
        assert alive() is not None  # out of the scans: an ordinary collection leaves it
        now[0] = 299.0
        collections.after_poll()
        gc.collect()
        assert alive() is not None
        now[0] = 300.0
        collections.after_poll()  # the periodic full collection
        assert alive() is None
    finally:
        collections.close()
    assert gc.get_freeze_count() == 0


class _Leaf:
    pass


def test_what_the_cache_lets_go_is_freed_at_once_while_frozen() -> None:
    collections = Collections(clock=lambda: 0.0)
    try:
        cache = {"person": _Leaf()}  # no cycle: reference counting frees it
        alive = weakref.ref(cache["person"])
        collections.after_poll()
        assert alive() is not None
        cache.clear()
        assert alive() is None
    finally:
        collections.close()


def test_a_cycle_made_while_storing_a_poll_is_reclaimed_after_it() -> None:
    collections = Collections(clock=lambda: 0.0)
    try:
        with collections.storing():
            assert not gc.isenabled()  # no collection in the middle of a poll
            for _ in range(10_000):  # more than enough to have set off a collection
                node = _Node()
            alive = weakref.ref(node)
            del node
        assert gc.isenabled()
        collections.after_poll()
        assert alive() is None  # reclaimed before the poll's survivors were frozen
    finally:
        collections.close()


def test_the_collector_is_back_on_when_storing_a_poll_raises() -> None:
    collections = Collections(clock=lambda: 0.0)
    try:
        try:
            with collections.storing():
                raise RuntimeError("a slice that failed")
        except RuntimeError:
            pass
        assert gc.isenabled()
    finally:
        collections.close()
