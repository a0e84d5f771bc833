"""The opt-out rule, in one place.

A person's opt-out state is a fold of their changes by when they *occurred*, not when they
arrived:

    compare the latest unsubscribe with the latest removal of an unsubscribe;
    the person is opted out when there is an unsubscribe and it is not older than every removal;
    a tie goes to the unsubscribe.

Because only the two maxima matter, the fold gives the same answer whatever order the changes
arrive in, and a change that arrives twice changes nothing. Among changes that occurred at the
same instant, the one with the greater event id is "latest", so which unsubscribe is shown as
the deciding one is order-independent too.

An address (a mailbox) folds the same way over the changes made to the address itself and every
unsubscribe its recipient made for it under any person (`domain.person` says which changes those
are): one mailbox, one answer.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from enum import StrEnum
from typing import Any
from uuid import UUID

import msgspec
from eventsourcing.persistence import Transcoding


class ChangeKind(StrEnum):
    """The changes a person can undergo; the inbound contract's `type` is exactly this list."""

    UNSUBSCRIBED = "unsubscribed"
    UNSUBSCRIBE_REMOVED = "unsubscribe_removed"
    PERSON_LINKED = "person_linked"


# Marks and states are frozen msgspec structs, not frozen dataclasses: made in C (a frozen
# dataclass sets each field through object.__setattr__, ten times slower to build), as a
# rebuild makes hundreds of thousands; equality, hashing and fields as a dataclass's.
class Mark(msgspec.Struct, frozen=True, gc=False):
    """Where a change sits in time: when it occurred, its event id breaking ties."""

    occurred_at: datetime
    event_id: UUID
    source: str = ""


def later(current: Mark | None, candidate: Mark) -> Mark:
    """The later of two marks (by occurred time, then event id)."""
    if current is None:
        return candidate
    if (candidate.occurred_at, candidate.event_id.bytes) > (
        current.occurred_at,
        current.event_id.bytes,
    ):
        return candidate
    return current


class OptOut(msgspec.Struct, frozen=True, gc=False):
    """The two facts the rule needs: the latest unsubscribe and the latest removal."""

    unsubscribe: Mark | None = None
    removal: Mark | None = None

    @property
    def opted_out(self) -> bool:
        if self.unsubscribe is None:
            return False
        return self.removal is None or self.unsubscribe.occurred_at >= self.removal.occurred_at

    def unsubscribed(self, mark: Mark) -> OptOut:
        return OptOut(later(self.unsubscribe, mark), self.removal)

    def removed(self, mark: Mark) -> OptOut:
        return OptOut(self.unsubscribe, later(self.removal, mark))

    def merged(self, other: OptOut) -> OptOut:
        """The fold of both sets of changes together."""
        merged = self
        if other.unsubscribe is not None:
            merged = merged.unsubscribed(other.unsubscribe)
        if other.removal is not None:
            merged = merged.removed(other.removal)
        return merged


def fold(changes: Iterable[tuple[ChangeKind, Mark]]) -> OptOut:
    """The rule's definition over a set of changes (what the aggregate keeps incrementally)."""
    state = OptOut()
    for kind, mark in changes:
        if kind is ChangeKind.UNSUBSCRIBED:
            state = state.unsubscribed(mark)
        elif kind is ChangeKind.UNSUBSCRIBE_REMOVED:
            state = state.removed(mark)
    return state


class MarkAsDict(Transcoding):
    """How a Mark is stored in snapshots (events carry flat fields, not marks)."""

    type = Mark
    name = "optout_mark"

    def encode(self, obj: Mark) -> dict[str, Any]:
        return {"occurred_at": obj.occurred_at, "event_id": obj.event_id, "source": obj.source}

    def decode(self, data: dict[str, Any]) -> Mark:
        return Mark(**data)


class OptOutAsDict(Transcoding):
    type = OptOut
    name = "optout_state"

    def encode(self, obj: OptOut) -> dict[str, Any]:
        return {"unsubscribe": obj.unsubscribe, "removal": obj.removal}

    def decode(self, data: dict[str, Any]) -> OptOut:
        return OptOut(**data)
