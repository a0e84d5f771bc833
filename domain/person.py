"""The person aggregate: one per person (or per address), holding what the opt-out rule needs and
the full history of changes.

Rules kept here (the opt-out rule itself is `domain.rule`):
- a person's own state is the fold of their own changes: latest unsubscribe against latest
  removal, by when they occurred, a tie to the unsubscribe;
- one mailbox, one answer: an unsubscribe the recipient made (actor kind `recipient`) for an
  address applies to that address wherever it appears; a change naming only an email applies to
  the address itself. A person is opted out when their own state says so *or* any address they
  carry is opted out. A removal applies only to what it names: a removal on a person never undoes
  an address's opt-out; remove it on the address (a change naming only the email) if the
  recipient asked;
- a change's time never exceeds the moment it is recorded (a future time is capped: the contract
  refuses anything beyond a small clock skew);
- removing an unsubscribe is deliberate and audited (a named user and a reason), and is never
  synced to Salesforce;
- the Salesforce id is the one named by the latest change that names one (by occurred time), so a
  late, older change cannot re-point the link;
- a person without a Salesforce id who is opted out is "pending link" until one arrives.
Duplicates (the same inbound event id, under any key) are refused by the application service
against the store's index of recorded event ids, not by the aggregate: its memory stays bounded.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any
from uuid import UUID

import msgspec
from eventsourcing.domain import Aggregate
from eventsourcing.utils import get_topic, register_topic

from domain.identity import aggregate_id, is_address, record_type
from domain.rule import Mark, OptOut, later


class Provenance(msgspec.Struct, frozen=True):
    """Who made a change, through which source and channel, when, and under which inbound id.
    (A struct, not a dataclass: one is made per change on the ingest's hot path.)"""

    event_id: UUID
    source: str
    actor_kind: str
    actor_id: str | None
    actor_name: str | None
    channel: str
    occurred_at: datetime
    reason: str | None = None


def _added_mailbox(state: dict[str, Any]) -> None:
    state["mailbox"] = None


class Person(Aggregate, created_event_name="Registered"):
    class Registered(Aggregate.Created):
        """A person's registration: their key. A new person's first change is stored as one event
        that is both (`FirstUnsubscribed` and the others below); older stores hold a `Registered`
        and the change at versions 1 and 2."""

        key: str

        def registration(self) -> Person.Registered:
            """The registration alone (a first change without its change)."""
            return self

    class Changed(Aggregate.Event):
        """Fields every recorded change carries: its provenance, and the address it named (its
        key; the clear address is never in an event)."""

        class_version = 2
        event_id: UUID
        source: str
        actor_kind: str
        actor_id: str | None
        actor_name: str | None
        channel: str
        occurred_at: datetime
        reason: str | None
        mailbox: str | None

        upcast_v1_v2 = staticmethod(_added_mailbox)  # 0.1 events named no address key

        @property
        def mark(self) -> Mark:
            return Mark(self.occurred_at, self.event_id, self.source)

    class Unsubscribed(Changed):
        salesforce_id: str | None

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            # 0.1 stored the clear address; its keyed hash cannot be derived without the key.
            state.pop("email", None)
            _added_mailbox(state)

        def apply(self, person: Person) -> None:
            mark = self.mark
            person.own = person.own.unsubscribed(mark)
            person.carry(self.mailbox)
            if self.mailbox and self.actor_kind == "recipient" and self.mailbox != person.key:
                person.by_recipient[self.mailbox] = later(
                    person.by_recipient.get(self.mailbox), mark
                )
            if self.salesforce_id:
                person.follow_link(self.salesforce_id, mark)

    class UnsubscribeRemoved(Changed):
        def apply(self, person: Person) -> None:
            person.own = person.own.removed(self.mark)
            person.carry(self.mailbox)
            # A later unsubscribe is pushed afresh: someone may have unchecked the box meanwhile.
            person.accepted_record = person.refused_record = None
            person.accepted_records = person.refused_records = ()

    class PersonLinked(Changed):
        """A Salesforce id became known or changed (the wire's `person_linked`)."""

        salesforce_id: str
        previous_salesforce_id: str | None

        def apply(self, person: Person) -> None:
            person.carry(self.mailbox)
            person.follow_link(self.salesforce_id, self.mark)

    # A new person's first change: one stored event that registers the person (a `Registered`)
    # and is the change (its fields, its class version, its apply); loading it creates the person
    # and applies the change. Readers that take it apart: `registration()`, then the change.

    class FirstUnsubscribed(Registered, Unsubscribed):
        """A new person's first change, an unsubscribe."""

        def registration(self) -> Person.Registered:
            return _registration(self)

    class FirstUnsubscribeRemoved(Registered, UnsubscribeRemoved):
        """A new person's first change, a removal."""

        def registration(self) -> Person.Registered:
            return _registration(self)

    class FirstPersonLinked(Registered, PersonLinked):
        """A new person's first change, a link."""

        def registration(self) -> Person.Registered:
            return _registration(self)

    # What Salesforce did with a push: outcomes, never changes (the rule's fold ignores them).

    class OptOutAccepted(Aggregate.Event):
        """Salesforce set the opt-out checkbox: the proof compliance asks for."""

        record_id: str  # the person's record (a converted Lead stays named here)
        object_type: str
        field: str
        written_id: str  # the record written: record_id, or the converted lead's contact
        converted_contact_id: str | None
        accepted_at: datetime  # when Salesforce's answer arrived

        def apply(self, person: Person) -> None:
            person.accepted_record, person.waiting = self.record_id, None
            person.accepted_records = (*person.accepted_records, self.record_id)

    class OptOutRefused(Aggregate.Event):
        """Salesforce did not set the checkbox: its code and message, and whether it is retried."""

        record_id: str
        object_type: str
        code: str
        message: str
        will_retry: bool

        def apply(self, person: Person) -> None:
            person.waiting = None
            if not self.will_retry:
                person.refused_record = self.record_id
                person.refused_records = (*person.refused_records, self.record_id)

    class PushWaiting(Aggregate.Event):
        """Why a push is not made yet (recorded when the reason changes, not on every pass)."""

        reason: str  # a WaitingReason
        detail: str | None

        def apply(self, person: Person) -> None:
            person.waiting = self.reason

    # Outcome state; class defaults so that snapshots taken before outcomes existed still load.
    accepted_record: str | None = None  # the record whose checkbox Salesforce accepted
    refused_record: str | None = None  # the record Salesforce refused for good
    waiting: str | None = None  # the current WaitingReason, if any
    # Every record accepted / refused for good since the latest removal (several with
    # OPTOUT_EMAIL_SCOPE=all or records found by email).
    accepted_records: tuple[str, ...] | list[str] = ()
    refused_records: tuple[str, ...] | list[str] = ()

    @staticmethod
    def create_id(key: str) -> UUID:
        return aggregate_id(key)

    @classmethod
    def register(cls, key: str) -> Person:
        """A new person: the same as `Person(key)`, without the metaclass's argument matching
        (half the cost, on the ingest's hot path)."""
        return cls._create(cls.Registered, id=aggregate_id(key), key=key)

    def __init__(self, key: str) -> None:
        self.key = key
        self.own = OptOut()
        # The latest unsubscribe this person's recipient made for each address they carry.
        self.by_recipient: dict[str, Mark] = {}
        self.mailboxes: list[str] = []  # keys of the addresses this person carries
        self.salesforce_id: str | None = None
        self.salesforce_mark: Mark | None = None

    @property
    def is_address(self) -> bool:
        return is_address(self.key)

    @property
    def opted_out(self) -> bool:
        """This person's own state (see `standing` for the answer that includes addresses)."""
        return self.own.opted_out

    def carry(self, mailbox: str | None) -> None:
        if mailbox and mailbox != self.key and mailbox not in self.mailboxes:
            self.mailboxes.append(mailbox)

    def follow_link(self, salesforce_id: str, mark: Mark) -> None:
        """The latest change (by occurred time) that names a Salesforce id decides the link."""
        if self.salesforce_mark is None or later(self.salesforce_mark, mark) is mark:
            self.salesforce_id, self.salesforce_mark = salesforce_id, mark

    # Commands. Duplicates are refused before they get here (see the module docstring).

    def unsubscribe(
        self,
        provenance: Provenance,
        *,
        mailbox: str | None = None,
        salesforce_id: str | None = None,
    ) -> None:
        if salesforce_id is not None:
            record_type(salesforce_id)
        self._change(
            self.Unsubscribed, **change_fields(provenance, mailbox), salesforce_id=salesforce_id
        )

    def remove_unsubscribe(self, provenance: Provenance, *, mailbox: str | None = None) -> None:
        if provenance.actor_kind != "user" or not provenance.actor_id or not provenance.reason:
            raise ValueError("removing an unsubscribe needs a named user and a reason")
        self._change(self.UnsubscribeRemoved, **change_fields(provenance, mailbox))

    def link(
        self, provenance: Provenance, salesforce_id: str, *, mailbox: str | None = None
    ) -> None:
        record_type(salesforce_id)
        self._change(
            self.PersonLinked,
            **change_fields(provenance, mailbox),
            salesforce_id=salesforce_id,
            previous_salesforce_id=self.salesforce_id,
        )

    def _change(self, kind: type[Person.Changed], **fields: Any) -> None:
        """Triggers a change; a new person's first change (their registration not stored yet)
        replaces the registration with one event that registers them and makes the change."""
        pending = self._pending_events
        if self.version == 1 and len(pending) == 1 and type(pending[0]) is Person.Registered:
            first = Person._create(FIRST_CHANGES[kind], id=self.id, key=self.key, **fields)
            vars(self).clear()
            vars(self).update(vars(first))  # what loading the one event gives
        else:
            self.trigger_event(kind, **fields)

    def push_accepted(
        self,
        *,
        record_id: str,
        object_type: str,
        field: str,
        written_id: str,
        converted_contact_id: str | None,
        accepted_at: datetime,
    ) -> None:
        self.trigger_event(
            self.OptOutAccepted,
            record_id=record_id,
            object_type=object_type,
            field=field,
            written_id=written_id,
            converted_contact_id=converted_contact_id,
            accepted_at=accepted_at,
        )

    def push_refused(
        self, *, record_id: str, object_type: str, code: str, message: str, will_retry: bool
    ) -> None:
        self.trigger_event(
            self.OptOutRefused,
            record_id=record_id,
            object_type=object_type,
            code=code,
            message=message,
            will_retry=will_retry,
        )

    def push_waiting(self, reason: WaitingReason, detail: str | None = None) -> bool:
        """Records the waiting reason only when it changes; True if recorded."""
        if self.waiting == reason:
            return False
        self.trigger_event(self.PushWaiting, reason=str(reason), detail=detail)
        return True


class WaitingReason(StrEnum):
    """Why an opt-out is not pushed yet (PRODUCT.md §1.5: a status, never a silent skip)."""

    NO_SALESFORCE_ID = "no_salesforce_id"  # pending link: pushed once an id arrives
    FIELD_MISSING = "field_missing"  # the opt-out field is not in the org
    BUDGET_SPENT = "budget_spent"  # this process's daily API budget
    API_LIMIT = "api_limit_reached"  # the org's whole allowance (REQUEST_LIMIT_EXCEEDED)


# Each change's first-change event (a new person's registration and that change in one).
FIRST_CHANGES: dict[type[Person.Changed], type[Person.Registered]] = {
    Person.Unsubscribed: Person.FirstUnsubscribed,
    Person.UnsubscribeRemoved: Person.FirstUnsubscribeRemoved,
    Person.PersonLinked: Person.FirstPersonLinked,
}


def _registration(first: Person.Registered) -> Person.Registered:
    fields = {name: getattr(first, name) for name in _REGISTRATION}
    return Person.Registered(**fields)


_REGISTRATION = ("originator_id", "originator_version", "timestamp", "originator_topic", "key")


# Stored events name their class by topic: the names events had before they were renamed.
FORMER_TOPICS: dict[str, type[Person.Event]] = {
    "domain.person:Person.SalesforceLinked": Person.PersonLinked,
}
for _former, _event_class in FORMER_TOPICS.items():
    register_topic(_former, _event_class)


def stored_topics(kinds: Iterable[type[Any]]) -> list[str]:
    """Every topic an event of these classes may be stored under: its own, the names it had before
    a rename, and for a change, a new person's first change of it (what a reader of the log asks
    for by topic)."""
    kinds = list(kinds)
    return (
        [get_topic(kind) for kind in kinds]
        + [former for former, kind in FORMER_TOPICS.items() if kind in kinds]
        + [get_topic(FIRST_CHANGES[kind]) for kind in kinds if kind in FIRST_CHANGES]
    )


def change_fields(
    provenance: Provenance, mailbox: str | None, recorded_at: datetime | None = None
) -> dict[str, Any]:
    """The fields of a recorded change, in their stored order; its time never after the moment
    it is recorded (now, unless given)."""
    return {
        "event_id": provenance.event_id,
        "source": provenance.source,
        "actor_kind": provenance.actor_kind,
        "actor_id": provenance.actor_id,
        "actor_name": provenance.actor_name,
        "channel": provenance.channel,
        "occurred_at": min(provenance.occurred_at, recorded_at or datetime.now(UTC)),
        "reason": provenance.reason,
        "mailbox": mailbox,
    }


@dataclass(frozen=True)
class Standing:
    """The one answer for a person or an address: opted out or not, and what decides it."""

    opted_out: bool
    own: OptOut
    # Each address that opts this person out, with its state; for an address, its carriers'
    # recipient unsubscribes are folded into `own`.
    by_address: dict[str, OptOut] = field(default_factory=dict)
    salesforce_id: str | None = None

    @property
    def pending_link(self) -> bool:
        return self.opted_out and self.salesforce_id is None


def address_state(address: Person | None, key: str, carriers: Iterable[Person]) -> OptOut:
    """An address's own fold: the changes made to the address itself and every unsubscribe its
    recipient made for it under any person."""
    state = address.own if address is not None else OptOut()
    for carrier in carriers:
        mark = carrier.by_recipient.get(key)
        if mark is not None:
            state = state.unsubscribed(mark)
    return state


def standing(person: Person, addresses: Mapping[str, OptOut]) -> Standing:
    """A person's answer: their own state, or any carried address's (`addresses` maps each
    mailbox the person carries to its `address_state`)."""
    opting_out = {key: state for key, state in addresses.items() if state.opted_out}
    return Standing(
        opted_out=person.own.opted_out or bool(opting_out),
        own=person.own,
        by_address=opting_out,
        salesforce_id=person.salesforce_id,
    )
