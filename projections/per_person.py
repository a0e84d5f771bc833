"""The per-person state read model: for every person and every address, the one answer (opted
out or not, since when, by which sources), the Salesforce id and type, and the Salesforce outcome
once the pusher records one. One mailbox, one answer: an address's row folds its own changes and
every unsubscribe its recipient made under any person; a person is opted out by their own
changes or by any address they carry (the rule of `domain.person`, kept incrementally).

No clear address is ever written here: addresses are their keys.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime
from functools import lru_cache

import msgspec

from domain.identity import ADDRESS_PREFIX, aggregate_id, record_type
from domain.person import Person, stored_topics
from domain.rule import Mark, OptOut, later
from projections.rule_fold import Order, opted_out_since
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
from projections.timestamps import utc_text
from projections.views import Rows, Table, Writes

CHANGES = (Person.Unsubscribed, Person.UnsubscribeRemoved, Person.PersonLinked)
_OUTCOME_EVENTS = (Person.OptOutAccepted, Person.OptOutRefused, Person.PushWaiting)
# Stored topics of what the read models follow, including names events had before a rename.
PERSON_TOPICS = stored_topics((Person.Registered, *CHANGES, *_OUTCOME_EVENTS))


class Fold(msgspec.Struct, kw_only=True, omit_defaults=True):
    """What the rule needs of one person or address, kept between pages (the row's `doc`;
    fields at their defaults are left out of it: a fifth to a third less to write)."""

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
        if removal is None:
            found = dict(self.own_sources)
        else:
            cut = removal.occurred_at
            found = {source: at for source, at in self.own_sources.items() if at >= cut}
        for source, at in self.recipient_sources.items():
            if (removal is None or at >= removal.occurred_at) and (
                source not in found or found[source] < at
            ):
                found[source] = at
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


class PersonStates:
    """The read model (see the module docstring)."""

    name: str = "person_state"
    tables: tuple[Table, ...] = (PERSON_STATE,)
    topics: Sequence[str] = PERSON_TOPICS

    def apply(self, events: Sequence[tuple[int, Fact]], rows: Rows) -> Writes:
        folds: dict[str, Fold] = {}
        held: dict[str, int] = {}  # the rows the table holds: their positions

        def load(ids: Collection[str]) -> None:
            wanted = [i for i in ids if i not in folds]
            for row in rows(PERSON_STATE, "person_id", wanted):
                folds[row[0]] = _decode(row[-1])
                held[row[0]] = row[-2]

        # The row ids of the addresses the page names (a dict is cheaper than the cache).
        # (`type(...) in` a set: `isinstance` against msgspec structs took twice as long.)
        named = {event.mailbox for _, event in events if type(event) in _CHANGES}  # type: ignore[attr-defined]
        row_ids = {mailbox: _row_id(mailbox) for mailbox in named if mailbox}  # each one once
        # A person registered in this page has no row before it (an address may: a carrier's
        # change makes its row before the address registers, if it ever does).
        new = {
            event.person_id
            for _, event in events
            if type(event) is Registered and not event.key.startswith(ADDRESS_PREFIX)
        }
        ids = {event.person_id for _, event in events}
        ids.update(row_ids.values())
        load(ids - new)
        # The rows this page changes, each with the position of the last event that did.
        touched: dict[str, int] = {}
        # Per row, the latest of the page's own unsubscribes, removals, its recipient's
        # unsubscribes, and changes naming a Salesforce id: only these become marks, once the
        # page is read (`projections.rule_fold`; an event's place in time is `order_of`).
        unsubscribes: dict[str, tuple[Order, Change]] = {}
        removals: dict[str, tuple[Order, Change]] = {}
        recipients: dict[str, tuple[Order, Change]] = {}
        links: dict[str, tuple[Order, Change]] = {}
        from_text = datetime.fromisoformat
        for position, event in events:
            person_id = event.person_id
            kind = type(event)
            fold = folds.get(person_id)
            if fold is None:
                if kind is not Registered:
                    continue  # registered before this model's start: cannot happen in one log
                fold = folds[person_id] = Fold(key=event.key)  # type: ignore[attr-defined]
            if event.version > fold.version:
                fold.version = event.version
            touched[person_id] = position
            if kind in _OUTCOME_KINDS:
                _outcome(fold, event)
                continue
            if kind not in _CHANGES:
                continue
            change: Change = event  # type: ignore[assignment]
            at = from_text(change.occurred.text)
            order = (at, change.event.id.int)
            if kind is Unsubscribed:
                found = unsubscribes.get(person_id)
                if found is None or order > found[0]:
                    unsubscribes[person_id] = (order, change)
                sources = fold.own_sources
                source = change.source
                if source not in sources or sources[source] < at:
                    sources[source] = at
                if change.salesforce_id:
                    found = links.get(person_id)
                    if found is None or order > found[0]:
                        links[person_id] = (order, change)
            elif kind is UnsubscribeRemoved:
                found = removals.get(person_id)
                if found is None or order > found[0]:
                    removals[person_id] = (order, change)
                fold.outcome = fold.outcome_detail = fold.outcome_at = None  # pushed afresh later
            elif change.salesforce_id is not None:  # a link
                found = links.get(person_id)
                if found is None or order > found[0]:
                    links[person_id] = (order, change)
            mailbox = change.mailbox
            if not mailbox or mailbox == fold.key:
                continue
            address_id = row_ids[mailbox]
            address = folds.get(address_id)
            if address is None:
                address = folds[address_id] = Fold(key=mailbox)
            touched[address_id] = position
            if mailbox not in fold.mailboxes:
                fold.mailboxes.append(mailbox)
            if fold.key not in address.carriers:
                address.carriers.append(fold.key)
            if kind is Unsubscribed and change.actor_kind == "recipient":
                found = recipients.get(address_id)
                if found is None or order > found[0]:
                    recipients[address_id] = (order, change)
                sources = address.recipient_sources
                source = change.source
                if source not in sources or sources[source] < at:
                    sources[source] = at
        # The page's latest, folded in as the rule folds marks (`later`).
        for row_id, ((at, _), change) in unsubscribes.items():
            fold = folds[row_id]
            fold.own = fold.own.unsubscribed(Mark(at, change.event.id, change.source))
        for row_id, ((at, _), change) in removals.items():
            fold = folds[row_id]
            fold.own = fold.own.removed(Mark(at, change.event.id, change.source))
        for row_id, ((at, _), change) in recipients.items():
            fold = folds[row_id]
            fold.recipient = later(fold.recipient, Mark(at, change.event.id, change.source))
        for row_id, ((at, _), change) in links.items():
            mark = Mark(at, change.event.id, change.source)
            _follow(folds[row_id], str(change.salesforce_id), mark)
        # One mailbox, one answer: a touched address changes its carriers' answers.
        id_of = {fold.key: person_id for person_id, fold in folds.items()}  # no uuid5 for these
        carriers = {
            id_of.get(key) or _row_id(key)
            for person_id in touched
            if folds[person_id].key.startswith(ADDRESS_PREFIX)  # `is_address`, without a call
            for key in folds[person_id].carriers
        }
        load(carriers)
        for carrier in carriers:
            if carrier not in touched and carrier in held:
                touched[carrier] = held[carrier]
        for i in touched:
            for m in folds[i].mailboxes:
                if m not in row_ids:
                    row_ids[m] = _row_id(m)
        load(row_ids.values())
        answers: dict[str, _Answer] = {}
        writes = Writes()
        for person_id, position in touched.items():
            row = _row(person_id, folds, position, answers, row_ids)
            if person_id in held:
                writes.upsert(PERSON_STATE, row)
            else:
                writes.insert(PERSON_STATE, row)
        return writes


def _row(
    person_id: str,
    folds: dict[str, Fold],
    position: int,
    answers: dict[str, _Answer],
    row_ids: dict[str, str],
) -> tuple[object, ...]:
    fold = folds[person_id]
    opted_out, first, sources = _answer(fold)  # `sources` may be the fold's own: copy to change
    since = [first] if first is not None else []
    opting: list[str] = []
    for mailbox in fold.mailboxes:
        address_id = row_ids[mailbox]
        answer = answers.get(address_id)
        if answer is None:
            address = folds.get(address_id)
            answer = answers[address_id] = _answer(address) if address else _NO_ANSWER
        if not answer[0]:
            continue
        if not opting:
            sources = dict(sources)  # a copy: the address's answer is shared by its carriers
        opting.append(mailbox)
        if answer[1] is not None:
            since.append(answer[1])
        for source, at in answer[2].items():
            if source not in sources or sources[source] < at:
                sources[source] = at
    opted_out = opted_out or bool(opting)
    key = fold.key
    return (
        person_id,
        key,
        "address" if key.startswith(ADDRESS_PREFIX) else "person",  # `is_address`
        int(opted_out),
        utc_text(min(since)) if opted_out and since else None,
        ",".join(sorted(sources)) if opted_out else "",
        ",".join(sorted(opting)) if opting else "",
        fold.salesforce_id,
        _type_text(fold.salesforce_id) if fold.salesforce_id else None,
        fold.outcome,
        utc_text(fold.outcome_at) if fold.outcome_at is not None else None,
        fold.version,
        position,
        _encode(fold).decode(),
    )


# A row's own answer: opted out, since when (its latest unsubscribe), the sources that count.
_Answer = tuple[bool, datetime | None, dict[str, datetime]]
_NO_ANSWER: _Answer = (False, None, {})
_CHANGES = frozenset((Unsubscribed, UnsubscribeRemoved, PersonLinked))
_OUTCOME_KINDS = frozenset(OUTCOMES)


def _answer(fold: Fold) -> _Answer:
    since = opted_out_since(fold.own, fold.recipient)  # `fold.state`, without building it
    if since is None:
        return _NO_ANSWER
    if fold.own.removal is None and not fold.recipient_sources:
        return True, since, fold.own_sources  # `counting_sources()` without its copy
    return True, since, fold.counting_sources()


_TYPE_TEXTS: dict[str, str] = {}  # a Salesforce id's key prefix -> its record type, as text


def _type_text(salesforce_id: str) -> str:
    found = _TYPE_TEXTS.get(salesforce_id[:3])
    if found is None:
        found = _TYPE_TEXTS[salesforce_id[:3]] = str(record_type(salesforce_id))
    return found


@lru_cache(maxsize=1 << 16)
def _row_id(key: str) -> str:
    return aggregate_id(key).hex


def decode_fold(doc: str | bytes) -> Fold:
    return _decode(doc)


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
