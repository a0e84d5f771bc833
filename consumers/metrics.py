"""The metrics each long-running process shows on /metrics, read from its own counters when
scraped. The README lists them; names follow Prometheus' conventions (`_total` for counters)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from consumers.health import Readiness
from consumers.ingest import Ingest
from consumers.nightly_schedule import ScheduleStats
from consumers.publisher import Publisher
from consumers.pusher import Pusher, PushStats
from consumers.read_models import ReadModels


class IngestMetrics(Collector):
    """One ingest member: what it did with the inbound changes, and how far behind Kafka it is."""

    def __init__(self, worker: Ingest) -> None:
        self.worker = worker

    def collect(self) -> Iterator[Metric]:
        stats = self.worker.stats
        yield by_outcome(
            "optout_ingest_changes",
            "Inbound messages handled by this process, by outcome",
            [
                ("recorded", stats.recorded),
                ("duplicate", stats.duplicates),
                ("dead_lettered", stats.dead_lettered),
                ("redelivered", stats.redelivered),
            ],
        )
        yield CounterMetricFamily(
            "optout_dead_letters",
            "Messages this process sent to the dead-letter topic, with their reason",
            value=stats.dead_lettered,
        )
        yield CounterMetricFamily(
            "optout_ingest_store_retries",
            "Slice writes this process retried after the store refused or failed them",
            value=stats.retries,
        )
        lag = GaugeMetricFamily(
            "optout_ingest_consumer_lag",
            "Messages in Kafka not yet stored, per partition this process holds",
            labels=["topic", "partition"],
        )
        for tp, behind in sorted(self.worker.lag.items()):
            lag.add_metric([tp.topic, str(tp.partition)], behind)
        yield lag
        yield GaugeMetricFamily(
            "optout_ingest_partitions",
            "Inbound partitions this process holds",
            value=len(self.worker.held),
        )
        yield ready(self.worker.not_ready)


class PublisherMetrics(Collector):
    """The analytics feed's publisher: what it published and how far behind the log it is."""

    def __init__(self, publisher: Publisher) -> None:
        self.publisher = publisher

    def collect(self) -> Iterator[Metric]:
        stats = self.publisher.stats
        yield CounterMetricFamily(
            "optout_feed_records", "Records this process committed to the analytics feed",
            value=stats.published,
        )  # fmt: skip
        yield CounterMetricFamily(
            "optout_feed_transactions", "Kafka transactions this process committed",
            value=stats.transactions,
        )  # fmt: skip
        yield GaugeMetricFamily(
            "optout_feed_position", "The event-log position the feed is published up to",
            value=stats.position,
        )  # fmt: skip
        yield GaugeMetricFamily(
            "optout_feed_lag", "Events in the log not yet read by the publisher (as last seen)",
            value=max(0, self.publisher.log_end - stats.position),
        )  # fmt: skip
        yield ready(self.publisher.not_ready)


class SchedulerMetrics(Collector):
    """The nightly scheduler: its passes, the last and the next."""

    def __init__(self, stats: ScheduleStats, not_ready: Readiness) -> None:
        self.stats = stats
        self.not_ready = not_ready

    def collect(self) -> Iterator[Metric]:
        yield by_outcome(
            "optout_nightly_passes", "Nightly passes this process ran, by outcome",
            [(outcome, self.stats.passes[outcome]) for outcome in ("done", "failed", "already_run")],
        )  # fmt: skip
        for name, help_text, at in (
            ("optout_nightly_last_pass_timestamp_seconds",
             "When the last pass this process ran ended (Unix time; 0: none yet)",
             self.stats.last_pass_at),
            ("optout_nightly_next_pass_timestamp_seconds",
             "When the next pass is due (Unix time)", self.stats.next_pass_at),
        ):  # fmt: skip
            yield GaugeMetricFamily(name, help_text, value=at.timestamp() if at else 0)
        yield ready(self.not_ready)


class PusherMetrics(Collector):
    """The live pusher: what Salesforce did with its pushes, its calls, how far behind the log."""

    def __init__(self, pusher: Callable[[], Pusher | None], not_ready: Readiness) -> None:
        self.pusher = pusher  # None while it starts or waits for the lock
        self.not_ready = not_ready

    def collect(self) -> Iterator[Metric]:
        pusher = self.pusher()
        stats = pusher.stats if pusher is not None else PushStats()
        yield by_outcome(
            "optout_push_records",
            "Opt-outs this process pushed to Salesforce, by outcome",
            [
                ("accepted", stats.accepted),
                ("refused", stats.refused),
                ("retried", stats.retried),
                ("waiting", stats.waiting),
            ],
        )
        yield CounterMetricFamily(
            "optout_salesforce_api_calls", "Salesforce API calls this process made",
            value=stats.calls,
        )  # fmt: skip
        yield GaugeMetricFamily(
            "optout_push_position", "The event-log position the pusher has settled up to",
            value=stats.position,
        )  # fmt: skip
        yield GaugeMetricFamily(
            "optout_push_lag", "Events in the log the pusher has not read yet (as last seen)",
            value=pusher.lag if pusher is not None else 0,
        )  # fmt: skip
        yield ready(self.not_ready)


class ProjectionMetrics(Collector):
    """The read models' keeper: each read model's position and lag behind the log."""

    def __init__(self, models: ReadModels) -> None:
        self.models = models

    def collect(self) -> Iterator[Metric]:
        position = GaugeMetricFamily(
            "optout_projection_position", "The event-log position each read model is at",
            labels=["read_model"],
        )  # fmt: skip
        lag = GaugeMetricFamily(
            "optout_projection_lag", "Events in the log not yet applied to each read model",
            labels=["read_model"],
        )  # fmt: skip
        for status in self.models.statuses():
            position.add_metric([status.name], status.position)
            lag.add_metric([status.name], status.lag)
        yield position
        yield lag
        yield ready(self.models.not_ready)


def ready(not_ready: Readiness) -> Metric:
    """`optout_ready`, every process's: 1 when /readyz would say ready."""
    return GaugeMetricFamily(
        "optout_ready", "1 when the process can do its work (see /readyz)",
        value=0 if not_ready() else 1,
    )  # fmt: skip


def by_outcome(name: str, help_text: str, counts: Iterable[tuple[str, float]]) -> Metric:
    """A counter with an `outcome` label, one sample per (outcome, count)."""
    family = CounterMetricFamily(name, help_text, labels=["outcome"])
    for outcome, count in counts:
        family.add_metric([outcome], count)
    return family
