"""The mailbox index read model: each address (its key, a keyed hash: never the clear address)
with its one answer, and every person that carries it, so that an email finds them all.

The answer follows the identity rule (`domain.person`): the address's own changes and every
unsubscribe its recipient made under any person.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from domain.rule import Mark, OptOut, later
from projections.per_person import PERSON_TOPICS, utc_text
from projections.stored import Change, Fact, Registered, Unsubscribed, UnsubscribeRemoved
from projections.views import Rows, Table, Writes


class AddressFold(msgspec.Struct, kw_only=True, omit_defaults=True):
    own: OptOut = OptOut()
    recipient: Mark | None = None

    @property
    def state(self) -> OptOut:
        return self.own if self.recipient is None else self.own.unsubscribed(self.recipient)


MAILBOXES = Table(
    "mailboxes",
    (
        ("mailbox", "text"),
        ("opted_out", "integer"),
        ("latest_unsubscribe", "text"),
        ("latest_removal", "text"),
        ("doc", "text"),
    ),
    key=("mailbox",),
)
CARRIERS = Table(
    "mailbox_carriers", (("mailbox", "text"), ("person_key", "text")), key=("mailbox", "person_key")
)
# Which key each aggregate id stands for (events name their aggregate by id only).
KEYS = Table("mailbox_keys", (("person_id", "text"), ("person_key", "text")), key=("person_id",))

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(AddressFold).decode


class MailboxIndex:
    name: str = "mailbox_index"
    tables: tuple[Table, ...] = (MAILBOXES, CARRIERS, KEYS)
    topics: Sequence[str] = PERSON_TOPICS

    def apply(self, events: Sequence[tuple[int, Fact]], rows: Rows) -> Writes:
        keys: dict[str, str] = {}
        wanted = {event.person_id for _, event in events}
        for _, event in events:
            if isinstance(event, Registered):
                keys[event.person_id] = event.key
        keys.update((r[0], r[1]) for r in rows(KEYS, "person_id", wanted - keys.keys()))
        mailboxes = {
            event.mailbox for _, event in events if isinstance(event, Change) and event.mailbox
        }
        folds = {r[0]: _decode(r[-1]) for r in rows(MAILBOXES, "mailbox", mailboxes)}
        stored = set(folds)  # the rows the table holds; the others are inserted
        writes = Writes()
        touched: set[str] = set()
        for _, event in events:
            if isinstance(event, Registered):
                writes.upsert(KEYS, (event.person_id, event.key))
            if not isinstance(event, Change) or not event.mailbox:
                continue
            key = keys.get(event.person_id)
            if key is None:
                continue
            mailbox = event.mailbox
            fold = folds.setdefault(mailbox, AddressFold())
            touched.add(mailbox)
            if key == mailbox:  # a change to the address itself
                if isinstance(event, Unsubscribed):
                    fold.own = fold.own.unsubscribed(event.mark)
                elif isinstance(event, UnsubscribeRemoved):
                    fold.own = fold.own.removed(event.mark)
                continue
            writes.upsert(CARRIERS, (mailbox, key))
            if isinstance(event, Unsubscribed) and event.actor_kind == "recipient":
                fold.recipient = later(fold.recipient, event.mark)
        for mailbox in touched:
            fold = folds[mailbox]
            state = fold.state
            row = (
                mailbox,
                int(state.opted_out),
                utc_text(state.unsubscribe.occurred_at) if state.unsubscribe else None,
                utc_text(state.removal.occurred_at) if state.removal else None,
                _encode(fold).decode(),
            )
            (writes.upsert if mailbox in stored else writes.insert)(MAILBOXES, row)
        return writes


def mailbox_state(doc: str) -> OptOut:
    return _decode(doc).state
