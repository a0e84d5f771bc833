"""What the read models know of a stored event: a small struct of the few fields they use (a
*fact*), read straight from the stored state by msgspec, without building a domain event.

The one place that reads the stored format for the read models. Each stored topic (current names
and the names events had before a rename, `domain.person.FORMER_TOPICS`) maps to the fact its
state decodes into (`FACT_OF_TOPIC`, one msgspec call per topic per page), the upcasts of
`domain.person` applied: a version-1 change names no mailbox, and its clear `email` is never
read. A stored event that gives more than one fact (say, a registration and a change in one) gets
a reader in `READERS`. A topic in neither, or a state msgspec refuses, goes through the
domain-event path (`facts_of_event` of eventsourcing's mapper's event), which gives the same facts:
`tests/integration/test_fast_decode.py` builds every read model both ways and compares the rows.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from typing import Any, ClassVar
from uuid import UUID

import msgspec
from eventsourcing.persistence import Mapper, StoredEvent
from eventsourcing.utils import get_topic

from domain.person import FIRST_CHANGES, FORMER_TOPICS, Person
from domain.rule import Mark
from projections.timestamps import utc_text
from projections.views import StoredRow


class Stamp(msgspec.Struct, frozen=True, gc=False):
    """A stored time as stored: eventsourcing tags it (`{"_type_": "datetime_iso", "_data_":
    isoformat()}`); kept as text, as most of them are only ever written out as UTC text."""

    text: str = msgspec.field(name="_data_")

    @property
    def at(self) -> datetime:
        return datetime.fromisoformat(self.text)

    @property
    def utc(self) -> str:
        """`projections.per_person.utc_text` of the time, cut from the text when it is UTC."""
        text = self.text
        if text.endswith("+00:00") and text[0] != "0":
            if len(text) == 32:  # with microseconds
                return text[:26] + "Z"
            if len(text) == 25:  # isoformat() leaves out zero microseconds
                return text[:19] + ".000000Z"
        return str(utc_text(datetime.fromisoformat(text)))


_UTC = "+00:00"


def utc_texts(texts: list[str]) -> list[str]:
    """`Stamp.utc` of each stored time, checked for the whole list at once: all UTC with
    microseconds (as eventsourcing stores them) are cut at once, else each one as `utc` does."""
    count = len(texts)
    joined = "".join(texts)
    if (
        len(joined) == 32 * count
        and set(map(len, texts)) <= {32}
        and all(joined[26 + i :: 32] == char * count for i, char in enumerate(_UTC))
        and "0" not in joined[::32]  # no year before 1000
    ):
        return [text[:26] + "Z" for text in texts]
    return [Stamp(text).utc for text in texts]


class StoredId(msgspec.Struct, frozen=True, gc=False):
    """A stored UUID, tagged as `uuid_hex`."""

    id: UUID = msgspec.field(name="_data_")


class Fact(msgspec.Struct, kw_only=True, gc=False):
    """Of every stored event: whose (the aggregate id as hex), its version, when recorded."""

    person_id: str = ""
    version: int = 0
    stamp: Stamp = msgspec.field(name="timestamp")

    @property
    def recorded_at(self) -> datetime:
        return self.stamp.at


class Registered(Fact, kw_only=True, gc=False):
    key: str


class Change(Fact, kw_only=True, gc=False):
    """A recorded change (`Person.Changed`): its provenance and the address key it named."""

    CLASS_VERSION: ClassVar[int] = 2  # Person.Changed.class_version
    event: StoredId = msgspec.field(name="event_id")
    source: str
    actor_kind: str
    actor_id: str | None
    actor_name: str | None
    channel: str
    occurred: Stamp = msgspec.field(name="occurred_at")
    reason: str | None
    mailbox: str | None = None
    salesforce_id: str | None = None  # an unsubscribe or a link may name one
    class_version: int = 1

    @property
    def occurred_at(self) -> datetime:
        return self.occurred.at

    @property
    def event_id(self) -> UUID:
        return self.event.id

    @property
    def mark(self) -> Mark:
        return Mark(datetime.fromisoformat(self.occurred.text), self.event.id, self.source)


class Unsubscribed(Change, kw_only=True, gc=False):
    pass


class UnsubscribeRemoved(Change, kw_only=True, gc=False):
    pass


class PersonLinked(Change, kw_only=True, gc=False):
    pass


class Accepted(Fact, kw_only=True, gc=False):
    """Salesforce set the checkbox (`Person.OptOutAccepted`)."""

    record_id: str
    object_type: str
    field: str
    written_id: str
    converted_contact_id: str | None
    accepted: Stamp = msgspec.field(name="accepted_at")

    @property
    def accepted_at(self) -> datetime:
        return self.accepted.at


class Refused(Fact, kw_only=True, gc=False):
    """Salesforce did not set it (`Person.OptOutRefused`)."""

    record_id: str
    object_type: str
    code: str
    message: str
    will_retry: bool


class Waiting(Fact, kw_only=True, gc=False):
    """Why a push is not made yet (`Person.PushWaiting`)."""

    reason: str
    detail: str | None


OUTCOMES = (Accepted, Refused, Waiting)
Page = list[tuple[int, Fact]]  # (position, fact), in log order
# Reads one stored event that gives other than one fact (position, aggregate id hex, version,
# state), appending its facts to the page.
Reader = Callable[[int, str, int, bytes, Page], None]

_KINDS: dict[type[Any], type[Fact]] = {
    Person.Registered: Registered,
    Person.Unsubscribed: Unsubscribed,
    Person.UnsubscribeRemoved: UnsubscribeRemoved,
    Person.PersonLinked: PersonLinked,
    Person.OptOutAccepted: Accepted,
    Person.OptOutRefused: Refused,
    Person.PushWaiting: Waiting,
}
# Stored topic -> the fact its state decodes into. A new event class: add it to `_KINDS` (and
# to `facts_of_event`); one that gives two facts (a registration and a change): to `READERS`.
FACT_OF_TOPIC: dict[str, type[Fact]] = {get_topic(event): kind for event, kind in _KINDS.items()}
FACT_OF_TOPIC.update(
    (former, _KINDS[event]) for former, event in FORMER_TOPICS.items() if event in _KINDS
)
READERS: dict[str, Reader] = {}
_MANY = {topic: msgspec.json.Decoder(list[kind]).decode for topic, kind in FACT_OF_TOPIC.items()}  # type: ignore[valid-type]


class _Key(msgspec.Struct, gc=False):
    key: str


_KEY = msgspec.json.Decoder(_Key).decode


def _first_change_reader(kind: type[Change]) -> Reader:
    """A new person's first change (`Person.FirstUnsubscribed` and its siblings): a registration
    and the change, at the same version."""
    decode = msgspec.json.Decoder(kind).decode

    def read(position: int, person_id: str, version: int, state: bytes, out: Page) -> None:
        change = _upcast(decode(state))
        change.person_id, change.version = person_id, version
        key = _KEY(state).key
        out.append(
            (
                position,
                Registered(person_id=person_id, version=version, stamp=change.stamp, key=key),
            )
        )
        out.append((position, change))

    return read


# The change each first change is, as a fact (the registration is a `Registered`).
_FIRST_KINDS: dict[type[Any], type[Change]] = {
    FIRST_CHANGES[event]: _KINDS[event]  # type: ignore[misc]
    for event in (Person.Unsubscribed, Person.UnsubscribeRemoved, Person.PersonLinked)
}
READERS.update(
    (get_topic(first), _first_change_reader(kind)) for first, kind in _FIRST_KINDS.items()
)
# A page's first changes are decoded like the other topics, in one call per topic (and their
# keys in another): the reader above, a row at a time, is the way back for a page msgspec refuses.
_MANY_FIRST = {
    get_topic(first): msgspec.json.Decoder(list[kind]).decode  # type: ignore[valid-type]
    for first, kind in _FIRST_KINDS.items()
}
_MANY_KEYS = msgspec.json.Decoder(list[_Key]).decode


def _upcast(fact: Change) -> Change:
    if fact.class_version < Change.CLASS_VERSION:
        fact.mailbox = None  # upcast_v1_v2: 0.1 named no address key (its clear email is ignored)
        fact.class_version = Change.CLASS_VERSION
    return fact


def _upcast_all(facts: list[Any]) -> list[Any]:
    """`_upcast` of each change; a page of current changes (the usual) in one pass over them."""
    current = Change.CLASS_VERSION
    if all(fact.class_version >= current for fact in facts):
        return facts
    return [_upcast(fact) for fact in facts]


def facts_of_event(event: object, out: Page, position: int) -> None:
    """The domain-event path: the facts of a domain event (none for one the read models ignore)."""
    kind = _KINDS.get(type(event)) or _FIRST_KINDS.get(type(event))
    if kind is None:
        return
    common: dict[str, Any] = {
        "person_id": event.originator_id.hex,  # type: ignore[attr-defined]
        "version": event.originator_version,  # type: ignore[attr-defined]
        "stamp": Stamp(event.timestamp.isoformat()),  # type: ignore[attr-defined]
    }
    fields = event.__dict__
    if type(event) in _FIRST_KINDS:  # a new person's first change: registered, then the change
        out.append((position, Registered(**common, key=fields["key"])))
    if kind is Registered:
        fact: Fact = Registered(**common, key=fields["key"])
    elif issubclass(kind, Change):
        fact = kind(
            **common,
            event=StoredId(fields["event_id"]),
            source=fields["source"],
            actor_kind=fields["actor_kind"],
            actor_id=fields["actor_id"],
            actor_name=fields["actor_name"],
            channel=fields["channel"],
            occurred=Stamp(fields["occurred_at"].isoformat()),
            reason=fields["reason"],
            mailbox=fields["mailbox"],
            salesforce_id=fields.get("salesforce_id"),
            class_version=Change.CLASS_VERSION,
        )
    elif kind is Accepted:
        fact = Accepted(
            **common,
            record_id=fields["record_id"],
            object_type=fields["object_type"],
            field=fields["field"],
            written_id=fields["written_id"],
            converted_contact_id=fields["converted_contact_id"],
            accepted=Stamp(fields["accepted_at"].isoformat()),
        )
    elif kind is Refused:
        fact = Refused(
            **common,
            record_id=fields["record_id"],
            object_type=fields["object_type"],
            code=fields["code"],
            message=fields["message"],
            will_retry=fields["will_retry"],
        )
    else:
        fact = Waiting(**common, reason=fields["reason"], detail=fields["detail"])
    out.append((position, fact))


class Facts:
    """A page of stored notifications as the read models' facts, in log order. `fast=False`
    reads every notification through the domain-event path (the equivalence test's oracle)."""

    def __init__(self, mapper: Mapper[Any], *, fast: bool = True) -> None:
        self.mapper = mapper
        self.fast = fast and mapper.cipher is None and mapper.compressor is None
        self.slow_reads = 0  # rows read through the domain-event path

    def __call__(self, rows: Sequence[StoredRow]) -> Page:
        """`rows` as `LogFollower.stored_page` reads them."""
        decoded, first = self._decoded(rows) if self.fast else ({}, {})
        out: Page = []
        for position, person_id, version, topic, state in rows:
            facts = decoded.get(topic)
            if facts is not None:
                fact = next(facts)
                fact.person_id, fact.version = person_id, version
                out.append((position, fact))
                continue
            changes = first.get(topic)
            if changes is not None:  # a registration and the change, at the same version
                change, key = next(changes)
                change.person_id, change.version = person_id, version
                out.append(
                    (
                        position,
                        Registered(
                            person_id=person_id, version=version, stamp=change.stamp, key=key.key
                        ),
                    )
                )
                out.append((position, change))
                continue
            reader = READERS.get(topic) if self.fast else None
            if reader is not None:
                try:
                    reader(position, person_id, version, state, out)
                    continue
                except msgspec.MsgspecError:
                    pass  # an unexpected shape: the domain-event path says what it is
            self.slow_reads += 1
            stored = StoredEvent(UUID(person_id), version, topic, state)
            facts_of_event(self.mapper.to_domain_event(stored), out, position)
        return out

    def _decoded(
        self, rows: Sequence[StoredRow]
    ) -> tuple[dict[str, Iterator[Fact]], dict[str, Iterator[tuple[Change, _Key]]]]:
        """The facts of each topic's rows, decoded in one call per topic (in the rows' order),
        and apart those of the first changes, each with its registration's key."""
        states: dict[str, list[bytes]] = {}
        for row in rows:
            if row[3] in FACT_OF_TOPIC or row[3] in _MANY_FIRST:
                states.setdefault(row[3], []).append(row[4])
        decoded: dict[str, Iterator[Fact]] = {}
        first: dict[str, Iterator[tuple[Change, _Key]]] = {}
        for topic, stored in states.items():
            # One buffer, the brackets put on its first and last state (not two more copies).
            stored[0] = b"[" + stored[0]
            stored[-1] = stored[-1] + b"]"
            whole = b",".join(stored)
            try:
                if topic in _MANY_FIRST:
                    changes = _upcast_all(_MANY_FIRST[topic](whole))
                    first[topic] = zip(changes, _MANY_KEYS(whole), strict=True)
                    continue
                facts = _MANY[topic](whole)
            except msgspec.MsgspecError:
                continue  # a state of an unexpected shape: read a row at a time (`READERS`), or
                # by the domain-event path
            if issubclass(FACT_OF_TOPIC[topic], Change):
                facts = _upcast_all(facts)
            decoded[topic] = iter(facts)
        return decoded, first
