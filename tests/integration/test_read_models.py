"""The read models on a real store, SQLite and PostgreSQL: built incrementally they give the
aggregates' answers; rebuilt they equal the incremental build; a reader during a rebuild sees the
old or the new copy, never a mix; a stopped projector resumes where it stopped; two runners on
one model write each page once; the follower waits without polling on PostgreSQL."""

from __future__ import annotations

import random
import shutil
import threading
import time
from pathlib import Path

from adapters.event_store import environment
from consumers import bootstrap
from consumers.read_models import ReadModels, read_models
from domain.application import ChangeRecorder
from domain.identity import is_address
from projections.per_person import PERSON_STATE
from projections.person_state import lookup_address, state_of
from projections.person_view import VIEWS, look_up
from projections.views import rebuild_together, view
from tests.integration.read_model_stream import (
    EMAILS,
    KEYS,
    PERSONS,
    contents,
    record_stream,
    store,
    store_url,
)

__all__ = ["store", "store_url"]
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def answers_agree(store: ChangeRecorder, models: ReadModels) -> None:
    """Every person's and address's answer from the read models equals the aggregates'."""
    for key in PERSONS + [KEYS.key_of(email) for email in EMAILS]:
        expected = lookup_address(store, key) if is_address(key) else state_of(store, key)
        with models.reading(VIEWS) as select:
            assert look_up(select, key, models.addresses_table) == expected, key


def test_built_page_by_page_the_read_models_give_the_aggregates_answers_and_a_rebuild_equals_them(
    store: ChangeRecorder,
) -> None:
    rnd = random.Random(12)
    models = read_models(store, page=7)  # pages end mid-batch
    for _ in range(6):
        record_stream(store, rnd, batches=4, size=15)
        models.catch_up()
    answers_agree(store, models)
    incremental = contents(models)
    assert len(incremental[view(PERSON_STATE)]) > len(PERSONS)
    outcomes = [r for r in incremental["rm_audit"] if r[4].startswith(("salesforce", "push"))]
    assert outcomes, "the stream holds push outcomes"
    for name, projector in models.projectors.items():
        # Another page size (COPY on PostgreSQL from 100 rows of a table): the same rows.
        projector.page = projector.rebuild_page = 1000
        assert projector.rebuild() == 2, name
    assert contents(models) == incremental
    answers_agree(store, models)
    assert {p.status().generation for p in models.projectors.values()} == {2}
    # All three in one pass over the log (`projections rebuild --all`): the same rows again.
    assert set(rebuild_together(list(models.projectors.values())).values()) == {3}
    assert contents(models) == incremental
    models.close()


def test_a_stopped_projector_resumes_where_it_stopped(store: ChangeRecorder) -> None:
    rnd = random.Random(5)
    record_stream(store, rnd, batches=6, size=20)
    head = read_models(store).follower.head()
    first = read_models(store, page=9)
    for projector in first.projectors.values():
        assert projector.catch_up(until=head // 2) >= head // 2
    first.close()
    second = read_models(store, page=9)  # as a new process would
    assert all(0 < p.status().position < head for p in second.projectors.values())
    second.catch_up()
    assert all(p.status().lag == 0 for p in second.projectors.values())
    answers_agree(store, second)
    resumed = contents(second)
    for projector in second.projectors.values():
        projector.rebuild()
    assert contents(second) == resumed
    second.close()


def test_a_reader_during_a_rebuild_sees_the_old_or_the_new_copy_never_a_mix(
    store: ChangeRecorder,
) -> None:
    rnd = random.Random(7)
    record_stream(store, rnd, batches=10, size=20)
    models = read_models(store, page=5)  # a rebuild of many small transactions
    models.catch_up()
    with models.reading(VIEWS) as select:
        persons = select(f"SELECT count(*) FROM {view(PERSON_STATE)}")[0][0]
        history = select("SELECT count(*) FROM rm_audit")[0][0]
    # The old copy is marked, so that old and new can be told apart.
    old = models.projectors["person_state"].store.live_generation("person_state")
    mark_old(models, old)
    seen: set[tuple[int, int, int]] = set()
    stop = threading.Event()
    reads = 0

    def read_until_stopped() -> None:
        nonlocal reads
        while not stop.is_set():
            with models.reading((view(PERSON_STATE), "rm_audit")) as select:
                rows = select(f"SELECT count(*), sum(version) FROM {view(PERSON_STATE)}")
                audit = select("SELECT count(*) FROM rm_audit")[0][0]
            seen.add((int(rows[0][0]), int(rows[0][1]), int(audit)))
            reads += 1

    reader = threading.Thread(target=read_until_stopped)
    reader.start()
    try:
        models.projectors["person_state"].rebuild()
        models.projectors["audit"].rebuild()
        after = reads
        deadline = time.monotonic() + 30
        while reads < after + 5 and time.monotonic() < deadline:
            stop.wait(0.01)  # a few reads of the new copy
    finally:
        stop.set()
        reader.join(timeout=60)
    with models.reading(VIEWS) as select:
        versions = select(f"SELECT sum(version) FROM {view(PERSON_STATE)}")[0][0]
    allowed = {
        (persons, versions + 1000 * persons, history),  # old copies
        (persons, versions, history),  # new person state, old audit: each whole
    }
    assert reads > 10, "the reader read during the rebuild"
    assert seen <= allowed, f"half-built or mixed reads: {seen - allowed}"
    assert (persons, versions, history) in seen, "the reader saw the new copy"
    models.close()


def mark_old(models: ReadModels, generation: int | None) -> None:
    """Adds 1000 to every version of the live copy: a read of it is told from one of the new."""
    from projections.view_store import physical

    table = physical(PERSON_STATE, int(generation or 0))
    with models.views._transaction(write=True) as cursor:  # type: ignore[attr-defined]
        cursor.execute(f"UPDATE {table} SET version = version + 1000")


def test_two_runners_on_one_model_write_each_page_once(store: ChangeRecorder) -> None:
    rnd = random.Random(9)
    record_stream(store, rnd, batches=10, size=20)
    runners = [read_models(store, page=3) for _ in range(2)]
    runners[0].projectors["audit"].ensure()
    threads = [threading.Thread(target=r.projectors["audit"].catch_up) for r in runners]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    changes = sum(1 for _ in store.all_changes())
    with runners[0].reading(("rm_audit",)) as select:
        rows = select(
            "SELECT count(*) FROM rm_audit WHERE change IN "
            "('unsubscribed', 'unsubscribe_removed', 'person_linked')"
        )
    assert rows[0][0] == changes
    for runner in runners:
        runner.close()


def test_the_follower_wakes_on_news_and_waits_without_polling_on_postgres(
    store: ChangeRecorder,
) -> None:
    rnd = random.Random(1)
    record_stream(store, rnd, batches=1, size=5)
    models = read_models(store)
    follower = models.follower
    head = follower.head()
    calls = 0
    page = follower.page
    waiting = threading.Event()

    def counted(*args: object, **kwargs: object) -> object:
        nonlocal calls
        calls += 1
        found = page(*args, **kwargs)  # type: ignore[arg-type]
        if threading.current_thread() is not threading.main_thread():
            waiting.set()  # the waiter looked and found nothing: it waits now
        return found

    follower.page = counted  # type: ignore[method-assign]
    assert follower.wait(head, 1.5) is False
    if follower.listens:
        assert calls <= 5, f"{calls} reads in 1.5 s of waiting: LISTEN, not polling"
    else:
        assert calls >= 10, "SQLite polls"
    woke: list[float] = []

    def wait() -> None:
        started = time.monotonic()
        woke.append(float(follower.wait(head, 20)))
        woke.append(time.monotonic() - started)

    waiter = threading.Thread(target=wait)
    waiter.start()
    assert waiting.wait(30)
    record_stream(store, rnd, batches=1, size=1)
    waiter.join(timeout=30)
    assert woke[0] == 1.0 and woke[1] < 10, woke
    if follower.listens:
        # The listening connection is cut (a restarted server): the follower listens again.
        with store.recorder.datastore.transaction(commit=True) as cursor:  # type: ignore[attr-defined]
            cursor.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND query LIKE 'LISTEN%%'"
            )
        head = follower.head()
        follower.wait(head, 1.0)  # finds the connection gone
        record_stream(store, rnd, batches=1, size=1)
        assert follower.wait(head, 20) is True
    follower.stop()
    assert follower.wait(head, 5) is False, "a stopped follower does not wait"
    models.close()


def test_a_store_written_by_version_0_1_is_read_by_the_read_models(tmp_path: Path) -> None:
    """Its events have older shapes and an old topic (`SalesforceLinked`): the read models read
    them as the aggregates do."""
    copy = tmp_path / "store.sqlite"
    shutil.copy(FIXTURES / "store-0.1.sqlite", copy)
    bootstrap.create_tables(f"sqlite:///{copy}")
    old = ChangeRecorder(env=environment(f"sqlite:///{copy}"))
    models = read_models(old)
    models.catch_up()
    for key in ("person:p-1", "person:p-2"):
        with models.reading(VIEWS) as select:
            found = look_up(select, key, models.addresses_table)
        assert found == state_of(old, key), key
        assert found is not None and found.salesforce_id is not None
    models.close()
    old.close()
