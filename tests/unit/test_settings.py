"""Settings: defaults, secrets kept out of repr, and bad values naming their variable."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from adapters import kafka_clients
from adapters.settings import ConfigError, DailyBudget, load
from devservices import settings as devservices_settings
from domain.opt_out_field import EmailScope, OptOutField


def test_defaults_are_the_embedded_ones(tmp_path: Path) -> None:
    settings = load({"OPTOUT_STATE_DIR": str(tmp_path)})
    assert settings.database_url == f"sqlite:///{tmp_path / 'optout.sqlite'}"
    assert settings.kafka_bootstrap_servers == "127.0.0.1:19092"
    assert settings.topic_dead_letter == "optout.changes.v1.dead-letter"


def test_the_clock_skew_is_five_minutes_unless_set() -> None:
    assert load({}).max_clock_skew == timedelta(minutes=5)
    assert load({"OPTOUT_MAX_CLOCK_SKEW": "90"}).max_clock_skew == timedelta(seconds=90)


def test_credentials_never_show_in_repr_or_output_urls() -> None:
    settings = load(
        {
            "OPTOUT_DATABASE_URL": "postgresql://optout:s3cret@db:5432/optout",
            "SALESFORCE_USERNAME": "ops@example.com",
            "SALESFORCE_PASSWORD": "hunter2",
            "SALESFORCE_SECURITY_TOKEN": "TOKEN123",
        }
    )
    shown = repr(settings)
    assert "s3cret" not in shown and "hunter2" not in shown and "TOKEN123" not in shown
    assert settings.store_location == "postgresql://db:5432/optout"
    assert str(settings.salesforce_password) == "hunter2"  # still usable by the client


def test_secrets_can_come_from_files(tmp_path: Path) -> None:
    secret = tmp_path / "password"
    secret.write_text("from-a-file\n")
    settings = load({"SALESFORCE_USERNAME": "u", "SALESFORCE_PASSWORD_FILE": str(secret)})
    assert str(settings.salesforce_password) == "from-a-file"


def test_a_malformed_database_url_is_refused_without_echoing_its_password() -> None:
    with pytest.raises(ConfigError, match="OPTOUT_DATABASE_URL") as refused:
        load({"OPTOUT_DATABASE_URL": "postgresql://app:s3cr#et@db:5432/optout"})
    assert "s3cr" not in str(refused.value)


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"OPTOUT_KAFKA_PORT": "0"}, "OPTOUT_KAFKA_PORT"),
        ({"OPTOUT_KAFKA_CONNECT_TIMEOUT": "soon"}, "OPTOUT_KAFKA_CONNECT_TIMEOUT"),
        ({"OPTOUT_MAX_CLOCK_SKEW": "-5"}, "OPTOUT_MAX_CLOCK_SKEW"),
        ({"OPTOUT_MAX_CLOCK_SKEW": "5m"}, "OPTOUT_MAX_CLOCK_SKEW"),
        ({"OPTOUT_DATABASE_URL": "mysql://db/x"}, "OPTOUT_DATABASE_URL"),
        ({"OPTOUT_DATABASE_URL": "sqlite://relative.db"}, "OPTOUT_DATABASE_URL"),
        ({"SALESFORCE_USERNAME": "u"}, "SALESFORCE_PASSWORD"),
        ({"SALESFORCE_PASSWORD_FILE": "/no/such/file"}, "SALESFORCE_PASSWORD_FILE"),
        ({"SALESFORCE_CA_BUNDLE": "/no/such/ca.pem"}, "SALESFORCE_CA_BUNDLE"),
    ],
)
def test_a_bad_setting_is_refused_with_its_name(env: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        load(env)


def test_topics_default_to_four_partitions_one_replica_and_kafkas_seven_days() -> None:
    settings = load({})
    assert (settings.topic_partitions, settings.topic_replication_factor) == (4, 1)
    assert settings.topic_min_insync_replicas == 1
    assert settings.topic_retention_ms == 7 * 24 * 3600 * 1000


@pytest.mark.parametrize(
    ("raw", "milliseconds"),
    [("12h", 43_200_000), ("30d", 2_592_000_000), ("90s", 90_000), ("1500", 1500), ("-1", -1)],
)
def test_inbound_retention_takes_a_duration_or_minus_one_for_forever(
    raw: str, milliseconds: int
) -> None:
    assert load({"OPTOUT_TOPIC_RETENTION": raw}).topic_retention_ms == milliseconds


def test_min_insync_replicas_defaults_to_one_less_than_the_replicas() -> None:
    assert load({"OPTOUT_TOPIC_REPLICATION_FACTOR": "3"}).topic_min_insync_replicas == 2
    assert load({"OPTOUT_TOPIC_REPLICATION_FACTOR": "2"}).topic_min_insync_replicas == 1
    chosen = load({"OPTOUT_TOPIC_REPLICATION_FACTOR": "3", "OPTOUT_TOPIC_MIN_INSYNC_REPLICAS": "3"})
    assert chosen.topic_min_insync_replicas == 3


def test_salesforce_sync_defaults() -> None:
    settings = load({})
    assert settings.salesforce_daily_budget == DailyBudget(share=0.2)
    assert settings.salesforce_daily_budget.limit(100_000) == 20_000
    assert settings.opt_out_field is OptOutField.EMAIL_OPT_OUT
    assert settings.nightly_sync is False
    assert settings.salesforce_timeout_s == 30.0
    assert (settings.email_scope, settings.resolve_by_email) == (EmailScope.LINKED, False)


def test_the_email_scope_and_resolving_by_email() -> None:
    settings = load({"OPTOUT_EMAIL_SCOPE": " ALL ", "OPTOUT_RESOLVE_BY_EMAIL": "on"})
    assert (settings.email_scope, settings.resolve_by_email) == (EmailScope.ALL, True)


@pytest.mark.parametrize(
    ("raw", "budget"),
    [
        ("5000", DailyBudget(calls=5000)),
        ("50%", DailyBudget(share=0.5)),
        (" 2.5% ", DailyBudget(share=0.025)),
    ],
)
def test_the_daily_budget_is_calls_or_a_share(raw: str, budget: DailyBudget) -> None:
    assert load({"OPTOUT_SALESFORCE_DAILY_BUDGET": raw}).salesforce_daily_budget == budget


def test_the_marketo_field_and_the_nightly_switch() -> None:
    settings = load(
        {
            "OPTOUT_OPT_OUT_FIELD": "Marketo_Sales_Opt_Out",
            "OPTOUT_MARKETO_FIELD_NAME": "mkto71_Sales_Opt_Out__c",
            "OPTOUT_NIGHTLY_SYNC": "on",
        }
    )
    assert settings.opt_out_field is OptOutField.MARKETO_SALES_OPT_OUT
    assert settings.marketo_field_name == "mkto71_Sales_Opt_Out__c"
    assert settings.nightly_sync is True


def test_client_credentials_come_from_files_and_never_show(tmp_path: Path) -> None:
    key, secret = tmp_path / "key", tmp_path / "secret"
    key.write_text("3MVG9-consumer-key\n")
    secret.write_text("consumer-s3cret\n")
    settings = load(
        {
            "SALESFORCE_CONSUMER_KEY_FILE": str(key),
            "SALESFORCE_CONSUMER_SECRET_FILE": str(secret),
            "SALESFORCE_DOMAIN": "acme.my",
        }
    )
    assert str(settings.salesforce_consumer_secret) == "consumer-s3cret"
    assert "consumer-s3cret" not in repr(settings) and "3MVG9" not in repr(settings)


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"OPTOUT_TOPIC_PARTITIONS": "0"}, "OPTOUT_TOPIC_PARTITIONS"),
        ({"OPTOUT_TOPIC_PARTITIONS": "twelve"}, "OPTOUT_TOPIC_PARTITIONS"),
        ({"OPTOUT_TOPIC_REPLICATION_FACTOR": "-1"}, "OPTOUT_TOPIC_REPLICATION_FACTOR"),
        ({"OPTOUT_TOPIC_MIN_INSYNC_REPLICAS": "0"}, "OPTOUT_TOPIC_MIN_INSYNC_REPLICAS"),
        (
            {"OPTOUT_TOPIC_REPLICATION_FACTOR": "2", "OPTOUT_TOPIC_MIN_INSYNC_REPLICAS": "3"},
            "OPTOUT_TOPIC_MIN_INSYNC_REPLICAS",
        ),
        ({"OPTOUT_TOPIC_MIN_INSYNC_REPLICAS": "2"}, "OPTOUT_TOPIC_MIN_INSYNC_REPLICAS"),
        ({"OPTOUT_TOPIC_RETENTION": "a week"}, "OPTOUT_TOPIC_RETENTION"),
        ({"OPTOUT_TOPIC_RETENTION": "0"}, "OPTOUT_TOPIC_RETENTION"),
        ({"OPTOUT_TOPIC_RETENTION": "-5"}, "OPTOUT_TOPIC_RETENTION"),
    ],
)
def test_a_bad_topic_setting_is_refused_with_its_name(env: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        load(env)


def test_topics_are_shaped_by_the_settings_and_dead_letters_are_kept_until_deleted() -> None:
    settings = load(
        {
            "OPTOUT_TOPIC_PARTITIONS": "12",
            "OPTOUT_TOPIC_REPLICATION_FACTOR": "3",
            "OPTOUT_TOPIC_RETENTION": "2d",
        }
    )
    inbound, dead_letter, redrives, feed = kafka_clients.topic_specs(settings)
    assert (inbound.name, inbound.partitions, inbound.replication_factor) == (
        "optout.changes.v1",
        12,
        3,
    )
    assert inbound.configs == {"min.insync.replicas": "2", "retention.ms": "172800000"}
    assert dead_letter.name == "optout.changes.v1.dead-letter"
    assert dead_letter.enforced["retention.ms"] == dead_letter.enforced["retention.bytes"] == "-1"
    assert redrives.name == "optout.changes.v1.dead-letter.redrives"
    assert redrives.enforced == {"cleanup.policy": "compact"}
    assert (feed.name, feed.partitions) == ("optout.state.v1", 12)
    assert feed.enforced["retention.ms"] == feed.enforced["retention.bytes"] == "-1"


def test_the_development_services_read_their_own_settings(tmp_path: Path) -> None:
    services = devservices_settings.load(
        {"OPTOUT_STATE_DIR": str(tmp_path), "OPTOUT_KAFKA_PORT": "29092"}
    )
    assert (services.state_dir, services.kafka_port, services.postgres_port) == (
        tmp_path,
        29092,
        15432,
    )
    # The engine's default broker is the development broker on that port.
    assert load({"OPTOUT_KAFKA_PORT": "29092"}).kafka_bootstrap_servers == "127.0.0.1:29092"
    with pytest.raises(devservices_settings.SettingError, match="OPTOUT_POSTGRES_PORT"):
        devservices_settings.load({"OPTOUT_POSTGRES_PORT": "http"})


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"OPTOUT_SALESFORCE_DAILY_BUDGET": "0"}, "OPTOUT_SALESFORCE_DAILY_BUDGET"),
        ({"OPTOUT_SALESFORCE_DAILY_BUDGET": "150%"}, "OPTOUT_SALESFORCE_DAILY_BUDGET"),
        ({"OPTOUT_SALESFORCE_DAILY_BUDGET": "lots"}, "OPTOUT_SALESFORCE_DAILY_BUDGET"),
        ({"OPTOUT_OPT_OUT_FIELD": "HasOptedOutOfEmail"}, "OPTOUT_OPT_OUT_FIELD"),
        ({"OPTOUT_MARKETO_FIELD_NAME": "x' OR 1"}, "OPTOUT_MARKETO_FIELD_NAME"),
        ({"OPTOUT_NIGHTLY_SYNC": "sometimes"}, "OPTOUT_NIGHTLY_SYNC"),
        ({"OPTOUT_EMAIL_SCOPE": "everyone"}, "OPTOUT_EMAIL_SCOPE"),
        ({"OPTOUT_RESOLVE_BY_EMAIL": "maybe"}, "OPTOUT_RESOLVE_BY_EMAIL"),
        ({"OPTOUT_SALESFORCE_TIMEOUT": "0"}, "OPTOUT_SALESFORCE_TIMEOUT"),
        (
            {"SALESFORCE_CONSUMER_KEY": "k", "SALESFORCE_DOMAIN": "acme.my"},
            "SALESFORCE_CONSUMER_SECRET",
        ),
        (
            {"SALESFORCE_CONSUMER_SECRET": "s", "SALESFORCE_DOMAIN": "acme.my"},
            "SALESFORCE_CONSUMER_KEY",
        ),
        ({"SALESFORCE_CONSUMER_KEY": "k", "SALESFORCE_CONSUMER_SECRET": "s"}, "SALESFORCE_DOMAIN"),
        (
            {
                "SALESFORCE_USERNAME": "u",
                "SALESFORCE_PASSWORD": "p",
                "SALESFORCE_CONSUMER_KEY": "k",
                "SALESFORCE_CONSUMER_SECRET": "s",
                "SALESFORCE_DOMAIN": "acme.my",
            },
            "SALESFORCE_CONSUMER_KEY",
        ),
    ],
)
def test_a_bad_salesforce_setting_is_refused_with_its_name(env: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        load(env)
