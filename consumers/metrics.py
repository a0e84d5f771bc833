"""The metrics each long-running process shows on /metrics, read from its own counters when
scraped. The README lists them; names follow Prometheus' conventions (`_total` for counters)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from consumers.ingest import Ingest


class IngestMetrics(Collector):
    """One ingest member: what it did with the inbound changes, and how far behind Kafka it is."""

    def __init__(self, worker: Ingest) -> None:
        self.worker = worker

    def collect(self) -> Iterator[Metric]:
        stats = self.worker.stats
        changes = CounterMetricFamily(
            "optout_ingest_changes",
            "Inbound messages handled by this process, by outcome",
            labels=["outcome"],
        )
        for outcome, count in (
            ("recorded", stats.recorded),
            ("duplicate", stats.duplicates),
            ("dead_lettered", stats.dead_lettered),
            ("redelivered", stats.redelivered),
        ):
            changes.add_metric([outcome], count)
        yield changes
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
        yield GaugeMetricFamily(
            "optout_ready", "1 when the process can do its work (see /readyz)",
            value=0 if self.worker.not_ready() else 1,
        )  # fmt: skip
