"""`optout-sync publish`: the long-running publisher of the analytics feed."""

from __future__ import annotations

import logging

import click
import msgspec
from kafka.errors import ProducerFencedError

from adapters.settings import ConfigError
from consumers import bootstrap, health
from consumers.metrics import PublisherMetrics
from consumers.stopping import idle_exit_option, stop_on_signals

log = logging.getLogger(__name__)


@click.command()
@idle_exit_option("with nothing new in the log")
@click.option("--json", "as_json", is_flag=True, help="Print the run's counts as JSON on exit.")
def publish(idle_exit: float | None, as_json: bool) -> None:
    """Publish each change of a person's opt-out state, and each Salesforce acceptance, to the
    analytics feed (OPTOUT_TOPIC_STATE), exactly once and in log order per person.

    One publisher is active per feed topic: starting another one fences this one, which stops.
    A restart resumes after the last record published (docs/analytics-feed.md)."""
    config = bootstrap.settings()
    with bootstrap.reachable(config):
        publisher = bootstrap.publisher(config)
    stop_on_signals(publisher.stop)
    try:
        with health.serving(config, [PublisherMetrics(publisher)], publisher.not_ready):
            stats = publisher.run(idle_exit_s=idle_exit)
    except ProducerFencedError:
        raise click.ClickException(
            "another publisher of this feed started and took over: this one stops"
        ) from None
    except ConfigError as error:
        raise click.ClickException(str(error)) from None
    finally:
        publisher.store.close()
    if as_json:
        click.echo(msgspec.json.encode(stats.__dict__).decode())
    else:
        click.echo(
            f"published {stats.published} records in {stats.transactions} transactions; "
            f"the feed is at log position {stats.position}"
        )
