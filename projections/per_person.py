"""The per-person state read model: for every person and every address, the one answer (opted
out or not, since when, by which sources), the Salesforce id and type, and the Salesforce outcome
once the pusher records one. One mailbox, one answer: an address's row folds its own changes and
every unsubscribe its recipient made under any person; a person is opted out by their own
changes or by any address they carry (the rule of `domain.person`, kept incrementally).

No clear address is ever written here: addresses are their keys.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import UTC, datetime

import msgspec
from eventsourcing.utils import get_topic

from domain.identity import aggregate_id, is_address, record_type
from domain.person import FORMER_TOPICS, Person
from domain.rule import Mark, OptOut, later
from projections.stored import (
    OUTCOMES,
    Accepted,
    Change,
    Fact,
    PersonLinked,
    Refused,
    Registered,
    Unsubscribed,
    UnsubscribeRemoved,
    Waiting,
)
from projections.views import Rows, Table, Writes

CHANGES = (Person.Unsubscribed, Person.UnsubscribeRemoved, Person.PersonLinked)
_OUTCOME_EVENTS = (Person.OptOutAccepted, Person.OptOutRefused, Person.PushWaiting)
# Stored topics of what the read models follow, including names events had before a rename.
PERSON_TOPICS = [get_topic(kind) for kind in (Person.Registered, *CHANGES, *_OUTCOME_EVENTS)] + [
    former for former, kind in FORMER_TOPICS.items() if kind in CHANGES
]


class Fold(msgspec.Struct, kw_only=True):
    """What the rule needs of one person or address, kept between pages (the row's `doc`)."""

    key: str
    own: OptOut = OptOut()
    own_sources: dict[str, datetime] = {}  # latest own unsubscribe per source
    mailboxes: list[str] = []  # addresses this person carries
    carriers: list[str] = []  # for an address: the persons that carry it
    recipient: Mark | None = None  # for an address: its recipient's latest unsubscribe
    recipient_sources: dict[str, datetime] = {}
    salesforce_id: str | None = None
    salesforce_mark: Mark | None = None
    outcome: str | None = None  # accepted | refused | retrying | waiting
    outcome_detail: str | None = None
    outcome_at: datetime | None = None
    version: int = 0

    @property
    def state(self) -> OptOut:
        """This row's own answer: for an address, with its recipient's unsubscribes."""
        return self.own if self.recipient is None else self.own.unsubscribed(self.recipient)

    def counting_sources(self) -> dict[str, datetime]:
        """Sources of the unsubscribes that still count (not older than the latest removal)."""
        removal = self.own.removal
        found: dict[str, datetime] = {}
        for source, at in [*self.own_sources.items(), *self.recipient_sources.items()]:
            if removal is None or at >= removal.occurred_at:
                found[source] = max(at, found.get(source, at))
        return found


PERSON_STATE = Table(
    "person_state",
    (
        ("person_id", "text"),
        ("person_key", "text"),
        ("kind", "text"),
        ("opted_out", "integer"),
        ("opted_out_since", "text"),
        ("sources", "text"),
        ("opted_out_by", "text"),  # keys of the carried addresses that opt the person out
        ("salesforce_id", "text"),
        ("salesforce_type", "text"),
        ("salesforce_outcome", "text"),
        ("salesforce_outcome_at", "text"),
        ("version", "integer"),
        ("position", "integer"),
        ("doc", "text"),
    ),
    key=("person_id",),
    indexes=(("person_key",),),
)

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(Fold).decode


def utc_text(at: datetime | None) -> str | None:
    """A time as sortable text: UTC, microseconds, `Z` (naive times are eventsourcing's UTC)."""
    if at is None:
        return None
    if at.tzinfo is UTC and at.year >= 1000:  # the common case, three times faster than strftime
        return at.isoformat(timespec="microseconds")[:-6] + "Z"
    aware = at if at.tzinfo else at.replace(tzinfo=UTC)
    return aware.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class PersonStates:
    """The read model (see the module docstring)."""

    name: str = "person_state"
    tables: tuple[Table, ...] = (PERSON_STATE,)
    topics: Sequence[str] = PERSON_TOPICS

    def apply(self, events: Sequence[tuple[int, Fact]], rows: Rows) -> Writes:
        folds: dict[str, Fold] = {}
        positions: dict[str, int] = {}

        def load(ids: Collection[str]) -> None:
            wanted = [i for i in ids if i not in folds]
            for row in rows(PERSON_STATE, "person_id", wanted):
                folds[row[0]] = _decode(row[-1])
                positions[row[0]] = row[-2]

        load({event.person_id for _, event in events} | set(_named_mailboxes(events)))
        touched: set[str] = set()
        for position, event in events:
            person_id = event.person_id
            if isinstance(event, Registered):
                folds.setdefault(person_id, Fold(key=event.key))
            fold = folds.get(person_id)
            if fold is None:
                continue  # registered before this model's start: cannot happen in one log
            fold.version = max(fold.version, event.version)
            positions[person_id] = position
            touched.add(person_id)
            if isinstance(event, Change):
                touched.update(self._change(fold, event, folds, positions, position))
            elif isinstance(event, OUTCOMES):
                _outcome(fold, event)
        # One mailbox, one answer: a touched address changes its carriers' answers.
        carriers = {
            aggregate_id(key).hex
            for person_id in touched
            if is_address(folds[person_id].key)
            for key in folds[person_id].carriers
        }
        load(carriers)
        touched |= carriers & folds.keys()
        load({aggregate_id(m).hex for i in touched for m in folds[i].mailboxes})
        writes = Writes()
        for person_id in touched:
            writes.upsert(PERSON_STATE, self._row(person_id, folds, positions[person_id]))
        return writes

    def _change(
        self,
        fold: Fold,
        event: Change,
        folds: dict[str, Fold],
        positions: dict[str, int],
        position: int,
    ) -> set[str]:
        mark = event.mark
        if isinstance(event, Unsubscribed):
            fold.own = fold.own.unsubscribed(mark)
            fold.own_sources[event.source] = max(
                event.occurred_at, fold.own_sources.get(event.source, event.occurred_at)
            )
            if event.salesforce_id:
                _follow(fold, event.salesforce_id, mark)
        elif isinstance(event, UnsubscribeRemoved):
            fold.own = fold.own.removed(mark)
            fold.outcome = fold.outcome_detail = fold.outcome_at = None  # pushed afresh later
        elif isinstance(event, PersonLinked) and event.salesforce_id is not None:
            _follow(fold, event.salesforce_id, mark)
        mailbox = event.mailbox
        if not mailbox or mailbox == fold.key:
            return set()
        address_id = aggregate_id(mailbox).hex
        address = folds.setdefault(address_id, Fold(key=mailbox))
        positions[address_id] = position
        if mailbox not in fold.mailboxes:
            fold.mailboxes.append(mailbox)
        if fold.key not in address.carriers:
            address.carriers.append(fold.key)
        if isinstance(event, Unsubscribed) and event.actor_kind == "recipient":
            address.recipient = later(address.recipient, mark)
            address.recipient_sources[event.source] = max(
                event.occurred_at, address.recipient_sources.get(event.source, event.occurred_at)
            )
        return {address_id}

    def _row(self, person_id: str, folds: dict[str, Fold], position: int) -> tuple[object, ...]:
        fold = folds[person_id]
        state = fold.state
        sources = fold.counting_sources() if state.opted_out else {}
        opting: list[str] = []
        since = [state.unsubscribe.occurred_at] if state.opted_out and state.unsubscribe else []
        for mailbox in fold.mailboxes:
            address = folds.get(aggregate_id(mailbox).hex)
            if address is None or not address.state.opted_out:
                continue
            opting.append(mailbox)
            if address.state.unsubscribe is not None:
                since.append(address.state.unsubscribe.occurred_at)
            for source, at in address.counting_sources().items():
                sources[source] = max(at, sources.get(source, at))
        opted_out = state.opted_out or bool(opting)
        return (
            person_id,
            fold.key,
            "address" if is_address(fold.key) else "person",
            int(opted_out),
            utc_text(min(since)) if opted_out and since else None,
            ",".join(sorted(sources)) if opted_out else "",
            ",".join(sorted(opting)),
            fold.salesforce_id,
            str(record_type(fold.salesforce_id)) if fold.salesforce_id else None,
            fold.outcome,
            utc_text(fold.outcome_at),
            fold.version,
            position,
            _encode(fold).decode(),
        )


def decode_fold(doc: str | bytes) -> Fold:
    return _decode(doc)


def _named_mailboxes(events: Sequence[tuple[int, Fact]]) -> list[str]:
    return [
        aggregate_id(event.mailbox).hex
        for _, event in events
        if isinstance(event, Change) and event.mailbox
    ]


def _follow(fold: Fold, salesforce_id: str, mark: Mark) -> None:
    """The latest change (by occurred time) that names a Salesforce id decides the link."""
    if fold.salesforce_mark is None or later(fold.salesforce_mark, mark) is mark:
        fold.salesforce_id, fold.salesforce_mark = salesforce_id, mark


def _outcome(fold: Fold, event: Fact) -> None:
    if isinstance(event, Accepted):
        fold.outcome, fold.outcome_at = "accepted", event.accepted_at
        fold.outcome_detail = f"{event.object_type} {event.written_id}: {event.field} = true"
    elif isinstance(event, Refused):
        if fold.outcome == "accepted" and event.will_retry:
            return
        fold.outcome = "retrying" if event.will_retry else "refused"
        fold.outcome_detail, fold.outcome_at = f"{event.code}: {event.message}", event.recorded_at
    elif isinstance(event, Waiting) and fold.outcome != "accepted":
        fold.outcome, fold.outcome_detail = "waiting", event.reason
        fold.outcome_at = event.recorded_at
