"""What `optout-sync status` reports, gathered by reading only: the inbound lag per partition (Kafka's
end offsets against the store's positions), each follower of the log (read models, the pusher,
the analytics feed) and its lag, pending and failed pushes (from the per-person read model), dead
letters, the Salesforce API calls of the budget's window, and the nightly pass, last and next.

Nothing is written to the event log, Kafka or Salesforce, and no Salesforce call is made; like
every reader, it brings the per-person read model (and the mailbox index) up to the log's head
before counting from them.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import msgspec
from kafka import KafkaConsumer, TopicPartition

from adapters import dead_letter, kafka_clients
from adapters.settings import Settings
from consumers.nightly_schedule import Schedule
from consumers.publisher import tracking_name
from consumers.pusher import PUSHER
from consumers.read_models import ReadModels
from domain.application import ChangeRecorder
from domain.nightly_pass import passes
from domain.push import spent_calls
from projections import push_status
from projections.per_person import PERSON_STATE
from projections.push_status import PushCounts

DEFAULT_MAX_LAG = 1000  # messages or log events behind: above it, status asks for attention
KAFKA_CALL_TIMEOUT_MS = 10_000

# The read models a count of persons needs, caught up first (as `person` does).
COUNTED_FROM = [PERSON_STATE.name, "mailbox_index"]


class PartitionLag(msgspec.Struct, frozen=True, kw_only=True):
    partition: int
    end: int  # Kafka's end offset: the next message's
    stored: int | None  # the last offset the store holds (None: none stored yet)
    lag: int  # messages in Kafka not yet in the store
    gap: bool  # messages the store never held are gone from Kafka: the ingest will stop on it


class Inbound(msgspec.Struct, frozen=True, kw_only=True):
    topic: str
    exists: bool
    lag: int  # over every partition
    partitions: list[PartitionLag]


class Follower(msgspec.Struct, frozen=True, kw_only=True):
    """One reader of the event log that keeps its own position in the store."""

    name: str  # a read model's name, `pusher`, or `feed:<topic>`
    kind: str  # read_model | pusher | feed
    position: int | None  # None: it never stored one (never run)
    lag: int  # events of the log after its position


class DeadLetters(msgspec.Struct, frozen=True, kw_only=True):
    topic: str
    total: int  # once per origin message, as `dlq list` shows them
    not_redriven: int


class ApiCalls(msgspec.Struct, frozen=True, kw_only=True):
    budget: str  # OPTOUT_SALESFORCE_DAILY_BUDGET as set: `5000` or `20%`
    window_hours: int  # the budget counts a rolling 24 hours
    used: int  # by the live pusher, as it recorded them
    limit: int | None  # None: a share of the org's maximum, which only Salesforce knows
    left: int | None
    nightly_used: int  # by nightly passes that ended in the window (their own count)


class NightlyPassView(msgspec.Struct, frozen=True, kw_only=True):
    slot: str
    started_at: datetime
    finished_at: datetime
    outcome: str  # done | failed
    error: str | None


class Nightly(msgspec.Struct, frozen=True, kw_only=True):
    enabled: bool  # OPTOUT_NIGHTLY_SYNC
    last: NightlyPassView | None
    next_at: datetime | None  # None while disabled
    overdue_slot: str | None  # a slot due with no pass done: the scheduler runs it at once


class Status(msgspec.Struct, frozen=True, kw_only=True):
    checked_at: datetime
    log_head: int
    max_lag: int
    inbound: Inbound
    followers: list[Follower]
    persons: PushCounts
    dead_letters: DeadLetters
    api_calls: ApiCalls
    nightly: Nightly
    attention: list[str]  # why status exits 1; empty: all is well


def gather(
    config: Settings, store: ChangeRecorder, models: ReadModels, *, max_lag: int = DEFAULT_MAX_LAG
) -> Status:
    """Every fact of the status, read now."""
    now = time.time()
    head = models.follower.head()
    followers = _followers(config, store, models, head)  # before the catch-up below
    models.catch_up(COUNTED_FROM)
    partial = Status(
        checked_at=datetime.fromtimestamp(now, UTC),
        log_head=head,
        max_lag=max_lag,
        inbound=inbound_lag(config, store),
        followers=followers,
        persons=persons(models),
        dead_letters=dead_letters(config),
        api_calls=api_calls(config, store, now),
        nightly=nightly(config, store, datetime.fromtimestamp(now, UTC)),
        attention=[],
    )
    return msgspec.structs.replace(partial, attention=attention(partial))


def _followers(
    config: Settings, store: ChangeRecorder, models: ReadModels, head: int
) -> list[Follower]:
    found = []
    for projector in models.projectors.values():
        status = projector.status()
        position = None if status.generation is None else status.position
        found.append(
            Follower(name=status.name, kind="read_model", position=position, lag=status.lag)
        )
    for name, kind in ((PUSHER, "pusher"), (tracking_name(config), "feed")):
        position = store.position(name)
        found.append(
            Follower(name=name, kind=kind, position=position, lag=max(0, head - (position or 0)))
        )
    return found


def inbound_lag(config: Settings, store: ChangeRecorder) -> Inbound:
    """Per partition of the inbound topic: Kafka's end against the store's position (the store
    is the truth; the group's committed offsets are only a hint)."""
    topic = config.topic_inbound
    reader = KafkaConsumer(
        bootstrap_servers=config.kafka_bootstrap_servers,
        client_id=kafka_clients.CLIENT_ID,
        group_id=None,
        enable_auto_commit=False,
        allow_auto_create_topics=False,  # looking never makes a topic with the broker's defaults
        request_timeout_ms=KAFKA_CALL_TIMEOUT_MS + 1000,
    )
    try:
        numbers = sorted(reader.partitions_for_topic(topic) or ())
        assigned = [TopicPartition(topic, p) for p in numbers]
        if not assigned:
            return Inbound(topic=topic, exists=False, lag=0, partitions=[])
        firsts = reader.beginning_offsets(assigned, timeout_ms=KAFKA_CALL_TIMEOUT_MS)
        ends = reader.end_offsets(assigned, timeout_ms=KAFKA_CALL_TIMEOUT_MS)
    finally:
        reader.close()
    partitions = []
    for tp in assigned:
        stored = store.position(f"{topic}:{tp.partition}")
        following = firsts[tp] if stored is None else stored + 1
        partitions.append(
            PartitionLag(
                partition=tp.partition,
                end=ends[tp],
                stored=stored,
                lag=max(0, ends[tp] - following),
                gap=following < firsts[tp],
            )
        )
    return Inbound(
        topic=topic, exists=True, lag=sum(p.lag for p in partitions), partitions=partitions
    )


def persons(models: ReadModels) -> PushCounts:
    """Counted from the read models (caught up by the caller)."""
    with models.reading(push_status.VIEWS) as select:
        return push_status.push_counts(select)


def dead_letters(config: Settings) -> DeadLetters:
    total = not_redriven = 0
    for letter in dead_letter.read(config):
        total += 1
        not_redriven += letter.redriven is None
    return DeadLetters(topic=config.topic_dead_letter, total=total, not_redriven=not_redriven)


def api_calls(config: Settings, store: ChangeRecorder, now: float) -> ApiCalls:
    """The pusher's calls of the last 24 hours, as it stored them; no call is spent to learn the
    org's maximum, so a share of it is a limit not known here."""
    budget = config.salesforce_daily_budget
    used = len(spent_calls(store, now))
    limit = budget.limit(None)
    window_start = datetime.fromtimestamp(now - 24 * 3600, UTC)
    nightly_used = sum(p.api_calls for p in passes(store) if _aware(p.finished_at) > window_start)
    return ApiCalls(
        budget=str(budget),
        window_hours=24,
        used=used,
        limit=limit,
        left=None if limit is None else max(0, limit - used),
        nightly_used=nightly_used,
    )


def nightly(config: Settings, store: ChangeRecorder, now: datetime) -> Nightly:
    recorded = list(passes(store))
    last = recorded[-1] if recorded else None
    shown = (
        NightlyPassView(
            slot=last.slot,
            started_at=_aware(last.started_at),
            finished_at=_aware(last.finished_at),
            outcome=last.outcome,
            error=last.error,
        )
        if last is not None
        else None
    )
    if not config.nightly_sync:
        return Nightly(enabled=False, last=shown, next_at=None, overdue_slot=None)
    schedule = Schedule(config.nightly_at, ZoneInfo(config.nightly_zone))
    due = schedule.due(now, {p.slot for p in recorded if p.outcome == "done"})
    return Nightly(
        enabled=True,
        last=shown,
        next_at=schedule.instant(schedule.next_slot(now)),
        overdue_slot=due.isoformat() if due is not None else None,
    )


def attention(status: Status) -> list[str]:
    """What needs an operator, one line each; status exits 1 when any."""
    found: list[str] = []
    inbound, limit = status.inbound, status.max_lag
    if not inbound.exists:
        found.append(f"the inbound topic {inbound.topic} does not exist: run `optout-sync init`")
    for p in inbound.partitions:
        if p.gap:
            found.append(f"{inbound.topic}:{p.partition}: messages never stored are gone (a gap)")
        if p.lag > limit:
            found.append(
                f"{inbound.topic}:{p.partition}: {p.lag} messages not ingested (> {limit})"
            )
    for follower in status.followers:
        # Read models are caught up by every reader; the pusher and the feed only by themselves.
        if follower.kind != "read_model" and follower.position is not None and follower.lag > limit:
            found.append(f"{follower.name}: {follower.lag} events behind the log (> {limit})")
    if status.persons.failed_pushes:
        found.append(f"{status.persons.failed_pushes} pushes refused by Salesforce for good")
    if status.dead_letters.not_redriven:
        found.append(f"{status.dead_letters.not_redriven} dead letters not re-driven")
    calls = status.api_calls
    if calls.limit is not None and calls.used >= calls.limit:
        found.append(f"the Salesforce API budget is spent: {calls.used} of {calls.limit} calls")
    last = status.nightly.last
    if last is not None and last.outcome == "failed":
        found.append(f"the last nightly pass ({last.slot}) failed: {last.error}")
    return found


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
