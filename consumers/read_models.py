"""The read models wired to a store: one follower of the log, one projector per model."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from adapters.event_store import ADDRESSES
from adapters.log_follower import LogFollower
from domain.application import ChangeRecorder
from projections.audit_trail import AuditTrail
from projections.mailbox_index import MailboxIndex
from projections.per_person import PersonStates
from projections.stored import Facts
from projections.view_store import addresses_table, open_view_store
from projections.views import Projector, ReadModel, Select, Status, ViewStore

MODELS: dict[str, type[ReadModel]] = {
    PersonStates.name: PersonStates,
    MailboxIndex.name: MailboxIndex,
    AuditTrail.name: AuditTrail,
}


@dataclass
class ReadModels:
    store: ChangeRecorder
    views: ViewStore
    follower: LogFollower
    projectors: dict[str, Projector]
    store_answered: bool = field(default=True, init=False)  # at the last look at the statuses

    @property
    def addresses_table(self) -> str:
        return addresses_table(self.store.recorder, ADDRESSES)

    def catch_up(self, names: list[str] | None = None) -> None:
        """Brings these read models (all by default) up to the log's head now."""
        for name in names or list(self.projectors):
            self.projectors[name].catch_up()

    @contextmanager
    def reading(self, views: tuple[str, ...]) -> Iterator[Select]:
        with self.views.reading(views) as select:
            yield select

    def statuses(self) -> list[Status]:
        """Each read model's position and lag now (none when the store does not answer)."""
        try:
            found = [projector.status() for projector in self.projectors.values()]
        except Exception:
            self.store_answered = False
            return []
        self.store_answered = True
        return found

    def not_ready(self) -> list[str]:
        """Why the read models are not kept up now (empty: they are), for /readyz."""
        reasons = ["stopping"] if self.follower.stopping.is_set() else []
        self.statuses()
        if not self.store_answered:
            reasons.append("the event store does not answer")
        return reasons

    def close(self) -> None:
        self.follower.close()


def read_models(store: ChangeRecorder, *, page: int | None = None, fast: bool = True) -> ReadModels:
    """`fast=False` reads every event through eventsourcing's mapper (the equivalence test's
    oracle for the fast decode of `projections.stored`)."""
    views = open_view_store(store.recorder)
    follower = LogFollower(store.recorder)
    decode = Facts(store.mapper, fast=fast)
    projectors = {
        name: Projector(model(), views, follower, decode) for name, model in MODELS.items()
    }
    if page is not None:  # pages of this size, following and rebuilding (tests)
        for projector in projectors.values():
            projector.page = projector.rebuild_page = page
    return ReadModels(store, views, follower, projectors)
