"""The rules that make `optout-sync status` exit 1: each fact alone, at and above its bound."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec

from consumers.status import (
    ApiCalls,
    DeadLetters,
    Follower,
    Inbound,
    Nightly,
    NightlyPassView,
    PartitionLag,
    Status,
    attention,
)
from projections.push_status import PushCounts

AT = datetime(2026, 3, 1, tzinfo=UTC)
CLEAN = Status(
    checked_at=AT,
    log_head=50,
    max_lag=10,
    inbound=Inbound(
        topic="in",
        exists=True,
        lag=10,
        partitions=[PartitionLag(partition=0, end=20, stored=9, lag=10, gap=False)],
    ),
    followers=[
        Follower(name="person_state", kind="read_model", position=0, lag=50),
        Follower(name="pusher", kind="pusher", position=40, lag=10),
        Follower(name="feed:out", kind="feed", position=None, lag=50),
    ],
    persons=PushCounts(pending_links=5, pending_pushes=5, failed_pushes=0),
    dead_letters=DeadLetters(topic="dl", total=4, not_redriven=0),
    api_calls=ApiCalls(
        budget="20%", window_hours=24, used=999, limit=None, left=None, nightly_used=0
    ),
    nightly=Nightly(enabled=False, last=None, next_at=None, overdue_slot=None),
    attention=[],
)
replace = msgspec.structs.replace


def test_lags_at_the_bound_read_models_behind_and_followers_never_run_are_fine() -> None:
    assert attention(CLEAN) == []


def test_each_fact_that_needs_attention_is_named() -> None:
    lagging = replace(
        CLEAN.inbound,
        partitions=[
            PartitionLag(partition=0, end=20, stored=8, lag=11, gap=False),
            PartitionLag(partition=1, end=20, stored=None, lag=0, gap=True),
        ],
    )
    behind = [replace(f, lag=11) if f.kind == "pusher" else f for f in CLEAN.followers]
    spent = replace(CLEAN.api_calls, budget="100", limit=100, used=100, left=0)
    failed = NightlyPassView(
        slot="2026-02-28", started_at=AT, finished_at=AT, outcome="failed", error="boom"
    )
    everything = replace(
        CLEAN,
        inbound=lagging,
        followers=behind,
        persons=replace(CLEAN.persons, failed_pushes=2),
        dead_letters=replace(CLEAN.dead_letters, not_redriven=1),
        api_calls=spent,
        nightly=replace(CLEAN.nightly, last=failed),
    )
    assert attention(everything) == [
        "in:0: 11 messages not ingested (> 10)",
        "in:1: messages never stored are gone (a gap)",
        "pusher: 11 events behind the log (> 10)",
        "2 pushes refused by Salesforce for good",
        "1 dead letters not re-driven",
        "the Salesforce API budget is spent: 100 of 100 calls",
        "the last nightly pass (2026-02-28) failed: boom",
    ]
    assert (
        attention(
            replace(CLEAN, nightly=replace(CLEAN.nightly, last=replace(failed, outcome="done")))
        )
        == []
    )
    missing = replace(CLEAN, inbound=Inbound(topic="in", exists=False, lag=0, partitions=[]))
    assert attention(missing) == ["the inbound topic in does not exist: run `optout-sync init`"]
