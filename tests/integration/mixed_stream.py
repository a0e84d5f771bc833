"""A mixed stream for the fault tests, and the answer it must leave, computed independently of
the domain: unsubscribes, removals and links; id-only, email-only and id-plus-email persons;
addresses shared by two persons; times that tie and arrive out of order."""

from __future__ import annotations

import random
import uuid
from collections import defaultdict
from datetime import UTC, datetime, timedelta

from adapters.inbound import Actor, ChangeV1, PersonRef
from domain.identity import AddressKeys, person_key, to_18
from tests.factories import good_change

T0 = datetime(2026, 10, 1, tzinfo=UTC)
ADMIN = Actor(kind="user", id="admin-1", name="Ann Admin")


def mixed_changes(count: int, persons: int, seed: int = 7) -> list[ChangeV1]:
    rng = random.Random(seed)
    addresses = max(1, persons // 2)  # person i carries address i % addresses: two per address
    salesforce_ids = [to_18(f"0035g0000{n:06d}") for n in range(50)]
    changes = []
    for _ in range(count):
        i = rng.randrange(persons)
        email = f"shared{i % addresses}@example.com"
        shape = rng.random()
        if shape < 0.3:
            person = PersonRef(person_id=f"p-{i}")
        elif shape < 0.7:
            person = PersonRef(person_id=f"p-{i}", email=email)
        else:
            person = PersonRef(email=email)
        kind = rng.random()
        at = T0 + timedelta(hours=rng.randrange(48))
        if kind < 0.6:
            actor = rng.choice([Actor(kind="recipient"), ADMIN, Actor(kind="system", id="sync")])
            linked = rng.choice([None, None, rng.choice(salesforce_ids)])
            person = PersonRef(person_id=person.person_id, email=person.email, salesforce_id=linked)
            change = good_change(
                person=person,
                actor=actor,
                occurred_at=at,
                source=rng.choice(["sales", "marketing"]),
            )
        elif kind < 0.85:
            change = good_change(
                type="unsubscribe_removed",
                person=person,
                actor=ADMIN,
                channel="manual",
                reason="asked back in",
                occurred_at=at,
            )
        else:
            person = PersonRef(
                person_id=person.person_id,
                email=person.email,
                salesforce_id=rng.choice(salesforce_ids),
            )
            change = good_change(
                type="person_linked",
                person=person,
                actor=Actor(kind="system", id="sync"),
                channel="sync",
                source="salesforce",
                occurred_at=at,
            )
        changes.append(change)
    return changes


def _opted_out(unsubscribes: list[datetime], removals: list[datetime]) -> bool:
    return bool(unsubscribes) and (not removals or max(unsubscribes) >= max(removals))


def expected_answers(
    changes: list[ChangeV1], keys: AddressKeys
) -> tuple[dict[str, bool], dict[str, str | None]]:
    """Every person's and address's answer, and each person's Salesforce id, from the rule as
    the product brief states it."""
    unsubscribes: dict[str, list[datetime]] = defaultdict(list)
    removals: dict[str, list[datetime]] = defaultdict(list)
    address_unsubscribes: dict[str, list[datetime]] = defaultdict(list)
    carried: dict[str, set[str]] = defaultdict(set)
    links: dict[str, tuple[datetime, bytes, str]] = {}
    for change in changes:
        ref = change.person
        mailbox = keys.key_of(ref.email) if ref.email else None
        key = person_key(ref.person_id) if ref.person_id else mailbox
        assert key is not None
        unsubscribes.setdefault(key, [])
        if mailbox is not None:
            unsubscribes.setdefault(mailbox, [])
            if mailbox != key:
                carried[key].add(mailbox)
        if change.type == "unsubscribed":
            unsubscribes[key].append(change.occurred_at)
            if mailbox is not None and change.actor.kind == "recipient":
                address_unsubscribes[mailbox].append(change.occurred_at)
        elif change.type == "unsubscribe_removed":
            removals[key].append(change.occurred_at)
        if ref.salesforce_id is not None:
            mark = (change.occurred_at, change.event_id.bytes, ref.salesforce_id)
            if key not in links or mark[:2] > links[key][:2]:
                links[key] = mark
    addresses = {
        key: _opted_out(
            (unsubscribes[key] if not key.startswith("person:") else [])
            + address_unsubscribes[key],
            removals[key] if not key.startswith("person:") else [],
        )
        for key in unsubscribes
        if not key.startswith("person:")
    }
    answers = dict(addresses)
    for key in unsubscribes:
        if key.startswith("person:"):
            own = _opted_out(unsubscribes[key], removals[key])
            answers[key] = own or any(addresses.get(m, False) for m in carried[key])
    salesforce = {key: link[2] for key, link in links.items()}
    return answers, salesforce


def unique_event_ids(changes: list[ChangeV1]) -> set[uuid.UUID]:
    return {change.event_id for change in changes}
