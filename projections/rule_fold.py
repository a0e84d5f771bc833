"""The opt-out rule of `domain.rule`, folded a page of changes at a time for the read models.

A rebuild meets a million changes: building the rule's frozen `Mark` and `OptOut` for each one
cost more than reading it. Here a page's changes are compared by their place in time alone
(`order_of`: occurred time, then event id, as `domain.rule.later` compares them), each row keeps
only its page's latest candidate, and only those become marks, merged with `later` into what the
row held. The rule's own functions decide; `tests/unit/test_rule_fold.py` checks on random
histories (hypothesis) that this gives what folding every change through `domain.rule` gives, and
that the per-person state, which writes `order_of` and `offer` inline in its loop (a call per
change cost a tenth of its fold), gives the same rows however a log is cut into pages.
"""

from __future__ import annotations

from datetime import datetime
from typing import TypeVar
from uuid import UUID

from domain.rule import Mark, OptOut

# A change's place in time: occurred time, then its event id as an integer (a UUID's big-endian
# bytes, which `domain.rule.later` compares, order as the integer does).
Order = tuple[datetime, int]
K = TypeVar("K")
T = TypeVar("T")


def order_of(occurred_at: datetime, event_id: UUID) -> Order:
    return occurred_at, event_id.int


def offer(latest: dict[K, tuple[Order, T]], key: K, order: Order, item: T) -> None:
    """Keeps `item` as the latest of `key` this page if it is later than the one kept (a tie
    keeps the first, as `later` keeps the current mark)."""
    found = latest.get(key)
    if found is None or order > found[0]:
        latest[key] = (order, item)


def opted_out_since(own: OptOut, recipient: Mark | None) -> datetime | None:
    """When the latest unsubscribe of `own.unsubscribed(recipient)` occurred if that state is
    opted out, else None — without building the state (only occurred times decide either)."""
    unsubscribe = own.unsubscribe
    at = unsubscribe.occurred_at if unsubscribe is not None else None
    if recipient is not None and (at is None or recipient.occurred_at > at):
        at = recipient.occurred_at
    if at is None:
        return None
    removal = own.removal
    if removal is not None and at < removal.occurred_at:
        return None
    return at
