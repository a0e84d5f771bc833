"""How many persons wait for Salesforce, counted from the per-person read model and the mailbox
index in one read: no aggregate is replayed. The rule is `domain.push.owed_by`'s: an address no
person carries is a person of its own; a carried one is pushed through its carriers' records, so
it counts there."""

from __future__ import annotations

import msgspec

from projections.mailbox_index import CARRIERS
from projections.per_person import PERSON_STATE
from projections.views import Select, view

VIEWS = (view(PERSON_STATE), view(CARRIERS))
_OPTED_OUT = f"SELECT COUNT(*) FROM {view(PERSON_STATE)} s WHERE s.opted_out = 1"


class PushCounts(msgspec.Struct, frozen=True, kw_only=True):
    pending_links: int  # opted out, no Salesforce id to push to
    pending_pushes: int  # opted out, linked, not yet accepted nor refused for good
    failed_pushes: int  # opted out, refused by Salesforce for good


def push_counts(select: Select) -> PushCounts:
    pending_links = select(
        f"{_OPTED_OUT} AND s.salesforce_id IS NULL AND (s.kind = 'person' OR NOT EXISTS "
        f"(SELECT 1 FROM {view(CARRIERS)} c WHERE c.mailbox = s.person_key))"
    )
    pending_pushes = select(
        f"{_OPTED_OUT} AND s.salesforce_id IS NOT NULL AND "
        "(s.salesforce_outcome IS NULL OR s.salesforce_outcome NOT IN ('accepted', 'refused'))"
    )
    failed = select(f"{_OPTED_OUT} AND s.salesforce_outcome = 'refused'")
    return PushCounts(
        pending_links=int(pending_links[0][0]),
        pending_pushes=int(pending_pushes[0][0]),
        failed_pushes=int(failed[0][0]),
    )
