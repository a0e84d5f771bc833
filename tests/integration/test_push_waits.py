"""The idle pusher waits for news without busy polling (LISTEN on PostgreSQL; a short poll on
SQLite), and a change recorded while it waits is pushed promptly."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence

import pytest
from eventsourcing.persistence import Notification

from adapters.inbound import PersonRef
from adapters.settings import Settings
from consumers import bootstrap
from consumers.pusher import IDLE_WAIT_S
from sandbox import Sandbox, running_sandbox
from tests.factories import good_change
from tests.integration.ingest_harness import wait_for
from tests.integration.test_push import IDLE_S, contact, ingest, with_org
from tests.salesforce.conftest import flag

pytestmark = [pytest.mark.kafka]
PROMPT_S = IDLE_WAIT_S / 2  # well within one idle wait: woken by the news, not by its timeout


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    with running_sandbox() as running:
        yield running


def test_an_idle_pusher_does_not_poll_and_pushes_a_change_recorded_while_it_waits(
    config: Settings, sandbox: Sandbox
) -> None:
    pusher = bootstrap.pusher(with_org(config, sandbox))
    reads = 0
    page = pusher.follower.page

    def counted(*args: object, **kwargs: object) -> Sequence[Notification]:
        nonlocal reads
        reads += 1
        return page(*args, **kwargs)  # type: ignore[arg-type]

    pusher.follower.page = counted  # type: ignore[method-assign]
    running = threading.Thread(target=pusher.run, name="pusher", daemon=True)
    try:
        stats = pusher.run(idle_exit_s=IDLE_S)  # nothing to push: idle throughout
        assert stats.read == 0
        if pusher.follower.listens:
            assert reads <= 4, f"{reads} reads of the log in {IDLE_S} s idle: LISTEN, not polling"
        else:
            assert reads >= 20, f"{reads} reads in {IDLE_S} s: SQLite polls every 50 ms"

        looked = reads
        running.start()
        wait_for(lambda: reads >= looked + 2, 60, "the pusher to look, then wait")
        record = contact(sandbox, "Idle")
        ingest(config, good_change(person=PersonRef(person_id="p-idle", salesforce_id=record)))
        wait_for(lambda: pusher.stats.accepted == 1, PROMPT_S, "the push of the news")
        assert flag(sandbox, record)
        assert running.is_alive(), "still running: woken, not ended"
    finally:
        pusher.stopping.set()  # cuts the wait short
        if running.ident is not None:
            running.join(timeout=60)
        pusher.close()
    assert not running.is_alive(), "the stop ended the wait"
