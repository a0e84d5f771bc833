"""`optout-sync replay --as-of T`: the whole log's counts and one person's or address's answer at
a past instant, as known then or by occurred time — on SQLite and on PostgreSQL."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from domain.application import Change, ChangeKind
from domain.identity import person_key
from domain.person import Provenance
from tests.e2e.cli import optout_sync
from tests.integration.log_store import AT, Store, store, unsubscribe

__all__ = ["store"]
SIDES = ("opted_out", "subscribed")


def removal(person_id: str, at: datetime) -> Change:
    provenance = Provenance(uuid.uuid4(), "sales", "user", "rep-7", None, "manual", at, "asked")
    return Change(ChangeKind.UNSUBSCRIBE_REMOVED, person_key(person_id), provenance)


def instant() -> datetime:
    """Now, and a clock that has moved past it (the next write is stamped later)."""
    moment = datetime.now(UTC)
    while datetime.now(UTC) <= moment:
        pass
    return moment


def replay(store: Store, *args: str) -> dict[str, Any]:
    result = optout_sync("replay", "--json", *args, env=store.env, timeout=120)
    assert result.returncode == 0, result.stderr
    parsed: dict[str, Any] = json.loads(result.stdout)
    return parsed


def test_replay_gives_the_state_known_at_each_instant(store: Store) -> None:
    before = instant()
    store.record([unsubscribe("p-1"), unsubscribe("p-2", "bob@example.com")])
    first = instant()
    store.record([removal("p-1", AT + timedelta(hours=1))])
    second = instant()
    # Arrives last, occurred first: known only after `second`, but occurred before `first`.
    store.record([unsubscribe("p-3", at=AT - timedelta(days=1))])

    def counts(moment: datetime, *by: str) -> tuple[int, ...]:
        found = replay(store, "--as-of", moment.isoformat(), *by)
        persons, addresses = found["persons"], found["addresses"]
        return tuple(part[side] for part in (persons, addresses) for side in SIDES)

    assert counts(before) == (0, 0, 0, 0)
    assert counts(first) == (2, 0, 1, 0)  # p-1, p-2; bob's address (its recipient unsubscribed)
    assert counts(second) == (1, 1, 1, 0)  # p-1's unsubscribe removed
    assert counts(second, "--by", "occurred") == (2, 1, 1, 0)  # p-3's older change counts
    assert counts(datetime.now(UTC)) == (2, 1, 1, 0)

    p1 = replay(store, "--as-of", first.isoformat(), "--person", "p-1")["answer"]
    assert (p1["known"], p1["opted_out"], p1["latest_removal"]) == (True, True, None)
    p1 = replay(store, "--as-of", second.isoformat(), "--person", "p-1")["answer"]
    assert not p1["opted_out"] and p1["latest_removal"]["source"] == "sales"

    p3 = replay(store, "--as-of", second.isoformat(), "--person", "p-3")["answer"]
    assert (p3["known"], p3["opted_out"]) == (False, False)
    p3 = replay(store, "--as-of", second.isoformat(), "--person", "p-3", "--by", "occurred")
    assert p3["by"] == "occurred" and p3["answer"]["opted_out"]

    bob = replay(store, "--as-of", first.isoformat(), "--person", "bob@example.com")
    assert (bob["answer"]["kind"], bob["answer"]["opted_out"]) == ("address", True)
    assert [p["key"] for p in bob["carried_by"]] == ["person:p-2"]
    assert bob["carried_by"][0]["opted_out"]

    text = optout_sync("replay", "--as-of", second.isoformat(), env=store.env, timeout=120)
    assert text.returncode == 0, text.stderr
    assert "persons    1 opted out, 1 subscribed" in text.stdout


def test_replay_has_help_and_refuses_what_it_cannot_answer(store: Store) -> None:
    helped = optout_sync("replay", "--help", env=store.env)
    assert helped.returncode == 0 and "--as-of" in helped.stdout and "--by" in helped.stdout
    store.record([unsubscribe("p-1")])
    naive = optout_sync("replay", "--as-of", "2026-11-03T09:00:00", env=store.env)
    assert naive.returncode == 2 and "no offset" in naive.stderr
    unknown = optout_sync(
        "replay", "--as-of", "2026-11-03T09:00:00Z", "--person", "p-none", env=store.env
    )
    assert unknown.returncode == 1 and "no such person" in unknown.stderr
