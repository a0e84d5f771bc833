"""The analytics feed's records, from a real (in-memory) store: one per change of a person's state
whatever order the changes were recorded in, one per Salesforce acceptance, none for what changes
nothing; and the published schema is the generated one and accepts them."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jsonschema
import pytest

from adapters.event_store import environment
from adapters.outbound import RecordKind, StateChangeV1, decode, encode, schema_text
from consumers.publisher import StateChanges
from domain.application import Change, ChangeKind, ChangeRecorder
from domain.identity import AddressKeys, aggregate_id, person_key
from domain.person import Provenance
from domain.push import Accepted, record_outcomes

ROOT = Path(__file__).resolve().parents[2]
T0 = datetime(2026, 11, 1, tzinfo=UTC)
KEYS = AddressKeys(b"k" * 32)


@pytest.fixture
def store() -> ChangeRecorder:
    return ChangeRecorder(env=environment("sqlite:///:memory:", create_table=True))


def change(kind: ChangeKind, at: datetime, who: str = "p-1", email: str | None = None) -> Change:
    removal = kind is ChangeKind.UNSUBSCRIBE_REMOVED
    provenance = Provenance(
        uuid.uuid4(), "sales" if removal else "marketing", "user" if removal else "recipient",
        "admin" if removal else None, None, "manual", at, "asked" if removal else None,
    )  # fmt: skip
    mailbox = KEYS.key_of(email) if email else None
    return Change(kind, person_key(who), provenance, mailbox, email, "0035g00000AbCdEAAV")


def feed(store: ChangeRecorder) -> list[StateChangeV1]:
    """What a publisher starting from the log's beginning would publish."""
    mapper = StateChanges(store)
    notifications = store.recorder.select_notifications(0, 10_000, inclusive_of_start=False)
    return [record for n in notifications for record in mapper.of(n)]


def test_a_record_per_flip_none_for_a_change_that_flips_nothing(store: ChangeRecorder) -> None:
    store.record([change(ChangeKind.UNSUBSCRIBED, T0, email="ada@example.com")])
    store.record([change(ChangeKind.UNSUBSCRIBED, T0 - timedelta(days=1))])  # older: no flip
    store.record([change(ChangeKind.UNSUBSCRIBE_REMOVED, T0 + timedelta(hours=1))])
    store.record([change(ChangeKind.UNSUBSCRIBE_REMOVED, T0 - timedelta(hours=1))])  # no flip
    # Arrives last, occurred before the removal: the removal still holds, nothing flips.
    store.record([change(ChangeKind.UNSUBSCRIBED, T0 + timedelta(minutes=30))])
    records = feed(store)
    assert [(r.change, r.opted_out) for r in records] == [
        ("unsubscribed", True),
        ("unsubscribe_removed", False),
    ]
    first = records[0]
    assert (
        first.person == aggregate_id(person_key("p-1")) and first.kind == RecordKind.OPT_OUT_CHANGED
    )
    assert (first.source, first.channel, first.actor_kind) == ("marketing", "manual", "recipient")
    assert first.occurred_at == T0 and first.salesforce_id == "0035g00000AbCdEAAV"
    assert first.dedup_key == f"{first.person}:1"  # the first change registers the person
    assert b"ada@example.com" not in b"".join(encode(r) for r in records)


def test_a_salesforce_acceptance_is_a_record_of_its_own(store: ChangeRecorder) -> None:
    store.record([change(ChangeKind.UNSUBSCRIBED, T0)])
    accepted_at = T0 + timedelta(seconds=1)
    record_outcomes(
        store,
        [Accepted(person_key("p-1"), "00Q5g00000AbCdEEAV", "Lead", "HasOptedOutOfEmail",
                  "0035g00000AbCdEAAV", "0035g00000AbCdEAAV", accepted_at)],
        None,
    )  # fmt: skip
    flip, acceptance = feed(store)
    assert acceptance.kind == RecordKind.SALESFORCE_ACCEPTED and acceptance.opted_out is True
    assert acceptance.salesforce is not None
    assert (acceptance.salesforce.record_id, acceptance.salesforce.written_id) == (
        "00Q5g00000AbCdEEAV",
        "0035g00000AbCdEAAV",
    )
    assert acceptance.salesforce.accepted_at == accepted_at
    assert acceptance.position > flip.position
    assert decode(encode(acceptance)) == acceptance


def test_a_publisher_that_starts_late_knows_each_persons_state_before(
    store: ChangeRecorder,
) -> None:
    store.record([change(ChangeKind.UNSUBSCRIBED, T0)])
    store.record([change(ChangeKind.UNSUBSCRIBE_REMOVED, T0 + timedelta(hours=1))])
    later = StateChanges(store)  # nothing kept: it reads the person as it was before each event
    [removal] = store.recorder.select_notifications(2, 1)
    [record] = later.of(removal)
    assert (record.change, record.opted_out) == ("unsubscribe_removed", False)


def test_the_published_schema_is_the_generated_one_and_accepts_the_records(
    store: ChangeRecorder,
) -> None:
    published = ROOT / "docs/schema/state-change-v1.schema.json"
    assert published.read_text() == schema_text(), "run: python -m adapters.outbound schema"
    store.record([change(ChangeKind.UNSUBSCRIBED, T0)])
    record_outcomes(
        store,
        [Accepted(person_key("p-1"), "0035g00000AbCdEAAV", "Contact", "HasOptedOutOfEmail",
                  "0035g00000AbCdEAAV", None, T0)],
        None,
    )  # fmt: skip
    validator = jsonschema.Draft202012Validator(
        json.loads(published.read_text()),
        format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER,
    )
    for record in feed(store):
        validator.validate(json.loads(encode(record)))
    with pytest.raises(jsonschema.ValidationError):
        validator.validate({"schema_version": 1, "kind": "opt_out_changed"})
