"""The one settings object: read from the environment (or `*_FILE` secret files), validated at start-up.

Every setting is an environment variable; a bad value stops start-up with a message naming it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from datetime import time, timedelta
from pathlib import Path
from typing import TypedDict
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec

from domain.opt_out_field import EmailScope, OptOutField


class ConfigError(ValueError):
    """A setting is missing or malformed; the message names the setting."""


class Secret(str):
    """A credential: usable as a string, never shown by repr() (so never in a logged Settings)."""

    def __repr__(self) -> str:
        return "'***'"


def _state_home() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "optout-sync"


# The local broker's and the tests' 4, so topics made by earlier versions still match.
DEFAULT_TOPIC_PARTITIONS = 4
DEFAULT_TOPIC_RETENTION_MS = 7 * 24 * 3600 * 1000  # Kafka's own default, stated


class DailyBudget(msgspec.Struct, frozen=True, kw_only=True):
    """This process's share of the org's daily API allowance: a number of calls or a fraction of Max."""

    calls: int | None = None
    share: float | None = None  # 0 < share <= 1, of the org's DailyApiRequests Max

    def limit(self, org_max: int | None) -> int | None:
        """Calls allowed per 24 hours; None while a share's org maximum is not yet known."""
        if self.calls is not None:
            return self.calls
        if self.share is None or org_max is None:
            return None
        return int(org_max * self.share)

    def __str__(self) -> str:
        return str(self.calls) if self.calls is not None else f"{(self.share or 0) * 100:g}%"


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    """Everything the engine can be told. Field docs name the environment variable."""

    # OPTOUT_STATE_DIR: where the embedded store and the address key live by default.
    state_dir: Path
    # KAFKA_BOOTSTRAP_SERVERS: an existing cluster; unset means the development broker on
    # 127.0.0.1:$OPTOUT_KAFKA_PORT (devservices/).
    kafka_bootstrap_servers: str
    # OPTOUT_KAFKA_CONNECT_TIMEOUT: seconds to wait for a broker to answer at start-up.
    kafka_connect_timeout_s: float = 30.0
    # OPTOUT_MAX_CLOCK_SKEW: seconds a change's occurred_at may lie ahead of our clock (else refused).
    max_clock_skew: timedelta = timedelta(minutes=5)
    # OPTOUT_DATABASE_URL: sqlite:///path (default, embedded) or postgresql://user@host:port/db.
    database_url: Secret  # may hold a password: see `store_location` for display
    topic_inbound: str
    topic_dead_letter: str
    consumer_group: str
    # OPTOUT_TOPIC_*: how `init` creates the topics and what it requires of existing ones.
    topic_partitions: int = DEFAULT_TOPIC_PARTITIONS
    topic_replication_factor: int = 1
    topic_min_insync_replicas: int = 1
    topic_retention_ms: int = DEFAULT_TOPIC_RETENTION_MS  # the inbound topic's; -1 keeps forever
    # OPTOUT_GROUP_INSTANCE_ID: static group membership, so a restarted worker rejoins at once.
    group_instance_id: str | None = None
    # SALESFORCE_*: the org; with no username configured the demo uses the local sandbox.
    salesforce_username: str | None = None
    salesforce_password: Secret | None = None
    salesforce_security_token: Secret | None = None
    salesforce_domain: str = "login"
    salesforce_ca_bundle: str | None = None
    # OPTOUT_ADDRESS_KEY: the secret of the keyed hash that stands in for an email address
    # (unset: generated once into OPTOUT_STATE_DIR/address.key; every worker must share it).
    address_key: Secret | None = None

    @property
    def topic_redrives(self) -> str:
        """The compacted topic of redrive receipts: which dead letters were re-sent, and when."""
        return f"{self.topic_dead_letter}.redrives"

    # SALESFORCE_CONSUMER_KEY/_SECRET: OAuth client credentials (a connected app), instead of a user.
    salesforce_consumer_key: Secret | None = None
    salesforce_consumer_secret: Secret | None = None
    # OPTOUT_SALESFORCE_TIMEOUT: seconds for any one HTTP call to Salesforce.
    salesforce_timeout_s: float = 30.0
    # OPTOUT_SALESFORCE_DAILY_BUDGET: calls a day this process may spend, e.g. 5000 or 20% of Max.
    salesforce_daily_budget: DailyBudget = msgspec.field(
        default_factory=lambda: DailyBudget(share=0.2)
    )
    # OPTOUT_OPT_OUT_FIELD: the checkbox chosen (email_opt_out or marketo_sales_opt_out).
    opt_out_field: OptOutField = OptOutField.EMAIL_OPT_OUT
    # OPTOUT_MARKETO_FIELD_NAME: the Marketo checkbox's API name; unset: found by its label.
    marketo_field_name: str | None = None
    # OPTOUT_NIGHTLY_SYNC: on/off; off means the live push writes HasOptedOutOfEmail (PRODUCT §1.1).
    nightly_sync: bool = False
    # OPTOUT_METRICS_PORT / _HOST: /metrics, /healthz and /readyz of a long-running process
    # (unset: not served); the host defaults to loopback, compose sets 0.0.0.0.
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"
    # OPTOUT_TOPIC_STATE: the analytics feed (docs/analytics-feed.md).
    topic_state: str = "optout.state.v1"
    # --- the nightly pass (issue 13) ---
    # OPTOUT_NIGHTLY_AT / OPTOUT_NIGHTLY_ZONE: the local time and IANA zone the pass is due daily.
    nightly_at: time = time(20, 0)
    nightly_zone: str = "America/Los_Angeles"
    # OPTOUT_NIGHTLY_OVERLAP: seconds re-read before the watermark (modstamps commit out of order).
    nightly_overlap: timedelta = timedelta(minutes=10)
    # OPTOUT_NIGHTLY_BULK_FROM: owed records from which the pass pushes by Bulk API 2.0.
    nightly_bulk_from: int = 2000
    # OPTOUT_EMAIL_SCOPE: linked (the person's own record) or all (every record carrying the email).
    email_scope: EmailScope = EmailScope.LINKED
    # OPTOUT_RESOLVE_BY_EMAIL: on/off; on: a person without a Salesforce id is pushed to the
    # records carrying their email (always so with OPTOUT_EMAIL_SCOPE=all).
    resolve_by_email: bool = False

    @property
    def store_location(self) -> str:
        """The event store's URL without credentials, fit for output."""
        url = urlsplit(self.database_url)
        if url.scheme == "sqlite":
            return str(self.database_url)
        host = f"{url.hostname or ''}:{url.port}" if url.port else (url.hostname or "")
        return url._replace(netloc=host).geturl()


ENV_NAMES = {
    "state_dir": "OPTOUT_STATE_DIR",
    "kafka_bootstrap_servers": "KAFKA_BOOTSTRAP_SERVERS",
    "kafka_connect_timeout_s": "OPTOUT_KAFKA_CONNECT_TIMEOUT",
    "max_clock_skew": "OPTOUT_MAX_CLOCK_SKEW",
    "database_url": "OPTOUT_DATABASE_URL",
    "topic_inbound": "OPTOUT_TOPIC_INBOUND",
    "topic_dead_letter": "OPTOUT_TOPIC_DEAD_LETTER",
    "consumer_group": "OPTOUT_CONSUMER_GROUP",
    "topic_partitions": "OPTOUT_TOPIC_PARTITIONS",
    "topic_replication_factor": "OPTOUT_TOPIC_REPLICATION_FACTOR",
    "topic_min_insync_replicas": "OPTOUT_TOPIC_MIN_INSYNC_REPLICAS",
    "topic_retention_ms": "OPTOUT_TOPIC_RETENTION",
    "group_instance_id": "OPTOUT_GROUP_INSTANCE_ID",
    "salesforce_username": "SALESFORCE_USERNAME",
    "salesforce_password": "SALESFORCE_PASSWORD",
    "salesforce_security_token": "SALESFORCE_SECURITY_TOKEN",
    "salesforce_domain": "SALESFORCE_DOMAIN",
    "salesforce_ca_bundle": "SALESFORCE_CA_BUNDLE",
    "address_key": "OPTOUT_ADDRESS_KEY",
    "salesforce_consumer_key": "SALESFORCE_CONSUMER_KEY",
    "salesforce_consumer_secret": "SALESFORCE_CONSUMER_SECRET",
    "salesforce_timeout_s": "OPTOUT_SALESFORCE_TIMEOUT",
    "salesforce_daily_budget": "OPTOUT_SALESFORCE_DAILY_BUDGET",
    "opt_out_field": "OPTOUT_OPT_OUT_FIELD",
    "marketo_field_name": "OPTOUT_MARKETO_FIELD_NAME",
    "nightly_sync": "OPTOUT_NIGHTLY_SYNC",
    "metrics_port": "OPTOUT_METRICS_PORT",
    "metrics_host": "OPTOUT_METRICS_HOST",
    "topic_state": "OPTOUT_TOPIC_STATE",
    "nightly_at": "OPTOUT_NIGHTLY_AT",
    "nightly_zone": "OPTOUT_NIGHTLY_ZONE",
    "nightly_overlap": "OPTOUT_NIGHTLY_OVERLAP",
    "nightly_bulk_from": "OPTOUT_NIGHTLY_BULK_FROM",
    "email_scope": "OPTOUT_EMAIL_SCOPE",
    "resolve_by_email": "OPTOUT_RESOLVE_BY_EMAIL",
}


def read_setting(env: Mapping[str, str], name: str) -> str | None:
    """A value from `NAME`, or from the file named by `NAME_FILE` (for secrets)."""
    if env.get(name):
        return env[name]
    secret_file = env.get(f"{name}_FILE")
    if secret_file:
        try:
            return Path(secret_file).read_text().strip()
        except OSError as error:
            raise ConfigError(
                f"{name}_FILE: cannot read {secret_file!r}: {error.strerror}"
            ) from None
    return None


def _port(env: Mapping[str, str], name: str, default: int) -> int:
    raw = read_setting(env, name)
    if raw is None:
        return default
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise ConfigError(f"{name}: expected a TCP port number (1-65535), got {raw!r}")
    return int(raw)


def _seconds(env: Mapping[str, str], name: str, default: float) -> float:
    raw = read_setting(env, name)
    if raw is None:
        return default
    try:
        seconds = float(raw)
    except ValueError:
        seconds = -1.0
    if not 0 < seconds < 3600:
        raise ConfigError(f"{name}: expected a number of seconds (0-3600), got {raw!r}")
    return seconds


def _database_url(env: Mapping[str, str], state_dir: Path) -> str:
    name = ENV_NAMES["database_url"]
    raw = read_setting(env, name)
    if raw is None:
        return f"sqlite:///{state_dir / 'optout.sqlite'}"
    try:
        url = urlsplit(raw)
        url.port  # noqa: B018 -- parsing the port is what fails on an unescaped password
    except ValueError:
        # Never echo the URL: it may hold a password.
        raise ConfigError(
            f"{name}: not a valid URL (percent-encode special characters in the password)"
        ) from None
    scheme = url.scheme
    if scheme not in ("sqlite", "postgresql", "postgres"):
        raise ConfigError(
            f"{name}: expected sqlite:///path or postgresql://user@host:port/db, "
            f"got a URL with scheme {scheme!r}"
        )
    if scheme == "sqlite" and not raw.startswith("sqlite:///"):
        raise ConfigError(f"{name}: a SQLite URL is sqlite:///path/to/file")
    return raw


def load(env: Mapping[str, str] | None = None) -> Settings:
    """Settings from the environment; raises ConfigError naming the bad setting."""
    env = os.environ if env is None else env
    state_dir = Path(read_setting(env, ENV_NAMES["state_dir"]) or _state_home())
    # The default follows the development broker's port setting, so the two meet.
    kafka_port = _port(env, "OPTOUT_KAFKA_PORT", 19092)
    topic_inbound = read_setting(env, ENV_NAMES["topic_inbound"]) or "optout.changes.v1"
    return Settings(
        state_dir=state_dir,
        kafka_bootstrap_servers=read_setting(env, ENV_NAMES["kafka_bootstrap_servers"])
        or f"127.0.0.1:{kafka_port}",
        kafka_connect_timeout_s=_seconds(env, ENV_NAMES["kafka_connect_timeout_s"], 30.0),
        max_clock_skew=timedelta(seconds=_seconds(env, ENV_NAMES["max_clock_skew"], 300.0)),
        database_url=Secret(_database_url(env, state_dir)),
        topic_inbound=topic_inbound,
        topic_dead_letter=read_setting(env, ENV_NAMES["topic_dead_letter"])
        or f"{topic_inbound}.dead-letter",
        consumer_group=read_setting(env, ENV_NAMES["consumer_group"]) or "optout-sync-ingest",
        group_instance_id=read_setting(env, ENV_NAMES["group_instance_id"]),
        address_key=_address_key(env),
        **_topics(env),
        **_salesforce(env),
        **_operator(env),
        **_nightly(env),
    )


class _OperatorSettings(TypedDict):
    metrics_port: int | None
    metrics_host: str
    topic_state: str


def _operator(env: Mapping[str, str]) -> _OperatorSettings:
    port_name = ENV_NAMES["metrics_port"]
    return {
        "metrics_port": _port(env, port_name, 0) if read_setting(env, port_name) else None,
        "metrics_host": read_setting(env, ENV_NAMES["metrics_host"]) or "127.0.0.1",
        "topic_state": read_setting(env, ENV_NAMES["topic_state"]) or "optout.state.v1",
    }


def _address_key(env: Mapping[str, str]) -> Secret | None:
    name = ENV_NAMES["address_key"]
    raw = read_setting(env, name)
    if raw is None:
        return None
    if len(raw.encode()) < 32:
        raise ConfigError(f"{name}: the address key must be at least 32 characters of secret")
    return Secret(raw)


class _TopicSettings(TypedDict):
    topic_partitions: int
    topic_replication_factor: int
    topic_min_insync_replicas: int
    topic_retention_ms: int


def _count(env: Mapping[str, str], name: str, default: int, most: int) -> int:
    raw = read_setting(env, name)
    if raw is None:
        return default
    if not raw.isdigit() or not 0 < int(raw) <= most:
        raise ConfigError(f"{name}: expected a whole number from 1 to {most}, got {raw!r}")
    return int(raw)


_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_DURATION = re.compile(r"^(\d+)\s*(ms|s|m|h|d)?$")


def _retention_ms(env: Mapping[str, str], name: str) -> int:
    raw = read_setting(env, name)
    if raw is None:
        return DEFAULT_TOPIC_RETENTION_MS
    if raw.strip() in ("-1", "forever"):
        return -1
    match = _DURATION.match(raw.strip())
    milliseconds = int(match[1]) * _UNIT_MS[match[2] or "ms"] if match else 0
    if milliseconds <= 0:
        raise ConfigError(
            f"{name}: expected a duration such as 7d, 12h, 30m, 90s or 604800000 (milliseconds), "
            f"or -1 to keep messages forever; got {raw!r}"
        )
    return milliseconds


def _topics(env: Mapping[str, str]) -> _TopicSettings:
    replicas_name = ENV_NAMES["topic_replication_factor"]
    insync_name = ENV_NAMES["topic_min_insync_replicas"]
    replicas = _count(env, replicas_name, 1, most=32)
    # Kafka's advice: with acks=all, one replica may be down and writes still count as safe.
    insync = _count(env, insync_name, max(1, replicas - 1), most=32)
    if insync > replicas:
        raise ConfigError(
            f"{insync_name}: {insync} is more than {replicas_name} ({replicas}); "
            "no write could ever be acknowledged"
        )
    return {
        "topic_partitions": _count(
            env, ENV_NAMES["topic_partitions"], DEFAULT_TOPIC_PARTITIONS, most=10_000
        ),
        "topic_replication_factor": replicas,
        "topic_min_insync_replicas": insync,
        "topic_retention_ms": _retention_ms(env, ENV_NAMES["topic_retention_ms"]),
    }


class _SalesforceSettings(TypedDict):
    salesforce_username: str | None
    salesforce_password: Secret | None
    salesforce_security_token: Secret | None
    salesforce_domain: str
    salesforce_ca_bundle: str | None
    salesforce_consumer_key: Secret | None
    salesforce_consumer_secret: Secret | None
    salesforce_timeout_s: float
    salesforce_daily_budget: DailyBudget
    opt_out_field: OptOutField
    marketo_field_name: str | None
    nightly_sync: bool
    email_scope: EmailScope
    resolve_by_email: bool


_API_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*(?!\n)$")
_SWITCH = {"on": True, "true": True, "1": True, "yes": True}
_SWITCH |= {"off": False, "false": False, "0": False, "no": False}


def _salesforce(env: Mapping[str, str]) -> _SalesforceSettings:
    """The org, how to log in to it, and what the sync may write and spend there."""
    username = read_setting(env, ENV_NAMES["salesforce_username"])
    password = read_setting(env, ENV_NAMES["salesforce_password"])
    token = read_setting(env, ENV_NAMES["salesforce_security_token"])
    if username and not password:
        raise ConfigError("SALESFORCE_PASSWORD: required when SALESFORCE_USERNAME is set")
    ca_bundle = read_setting(env, ENV_NAMES["salesforce_ca_bundle"])
    if ca_bundle and not Path(ca_bundle).is_file():
        raise ConfigError(f"SALESFORCE_CA_BUNDLE: no such file {ca_bundle!r}")
    domain = read_setting(env, ENV_NAMES["salesforce_domain"]) or "login"
    key = read_setting(env, ENV_NAMES["salesforce_consumer_key"])
    secret = read_setting(env, ENV_NAMES["salesforce_consumer_secret"])
    if bool(key) != bool(secret):
        missing = "SALESFORCE_CONSUMER_SECRET" if key else "SALESFORCE_CONSUMER_KEY"
        raise ConfigError(f"{missing}: OAuth client credentials need both the key and the secret")
    if key and username:
        raise ConfigError(
            "SALESFORCE_CONSUMER_KEY: set either SALESFORCE_USERNAME (user login) or "
            "SALESFORCE_CONSUMER_KEY/_SECRET (OAuth client credentials), not both"
        )
    if key and domain in ("login", "test"):
        raise ConfigError(
            "SALESFORCE_DOMAIN: OAuth client credentials need the org's My Domain "
            "(e.g. acme.my), not login or test"
        )
    marketo_name = read_setting(env, ENV_NAMES["marketo_field_name"])
    if marketo_name is not None and not _API_NAME.match(marketo_name):
        raise ConfigError(
            f"OPTOUT_MARKETO_FIELD_NAME: not a Salesforce field API name: {marketo_name!r}"
        )
    return {
        "salesforce_username": username,
        "salesforce_password": Secret(password) if password else None,
        "salesforce_security_token": Secret(token) if token else None,
        "salesforce_domain": domain,
        "salesforce_ca_bundle": ca_bundle,
        "salesforce_consumer_key": Secret(key) if key else None,
        "salesforce_consumer_secret": Secret(secret) if secret else None,
        "salesforce_timeout_s": _seconds(env, ENV_NAMES["salesforce_timeout_s"], 30.0),
        "salesforce_daily_budget": _daily_budget(env),
        "opt_out_field": _opt_out_field(env),
        "marketo_field_name": marketo_name,
        "nightly_sync": _switch(env, ENV_NAMES["nightly_sync"], default=False),
        "email_scope": _email_scope(env),
        "resolve_by_email": _switch(env, ENV_NAMES["resolve_by_email"], default=False),
    }


def _email_scope(env: Mapping[str, str]) -> EmailScope:
    name = ENV_NAMES["email_scope"]
    raw = read_setting(env, name) or EmailScope.LINKED.value
    try:
        return EmailScope(raw.strip().lower())
    except ValueError:
        choices = ", ".join(scope.value for scope in EmailScope)
        raise ConfigError(f"{name}: expected one of {choices}, got {raw!r}") from None


def _daily_budget(env: Mapping[str, str]) -> DailyBudget:
    name = ENV_NAMES["salesforce_daily_budget"]
    raw = (read_setting(env, name) or "20%").strip()
    problem = f"{name}: expected a number of calls (e.g. 5000) or a share of the org's daily maximum (e.g. 20%), got {raw!r}"
    if raw.endswith("%"):
        try:
            percent = float(raw[:-1])
        except ValueError:
            raise ConfigError(problem) from None
        if not 0 < percent <= 100:
            raise ConfigError(problem)
        return DailyBudget(share=percent / 100)
    if not raw.isdigit() or int(raw) < 1:
        raise ConfigError(problem)
    return DailyBudget(calls=int(raw))


def _opt_out_field(env: Mapping[str, str]) -> OptOutField:
    name = ENV_NAMES["opt_out_field"]
    raw = read_setting(env, name) or OptOutField.EMAIL_OPT_OUT.value
    try:
        return OptOutField(raw.strip().lower())
    except ValueError:
        choices = ", ".join(field.value for field in OptOutField)
        raise ConfigError(f"{name}: expected one of {choices}, got {raw!r}") from None


def _switch(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = read_setting(env, name)
    if raw is None:
        return default
    if raw.strip().lower() not in _SWITCH:
        raise ConfigError(f"{name}: expected on or off, got {raw!r}")
    return _SWITCH[raw.strip().lower()]


class _NightlySettings(TypedDict):
    nightly_at: time
    nightly_zone: str
    nightly_overlap: timedelta
    nightly_bulk_from: int


_CLOCK_TIME = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)(?!\n)$")


def _nightly(env: Mapping[str, str]) -> _NightlySettings:
    """When the nightly pass is due, and how it reads and writes."""
    at_name, zone_name = ENV_NAMES["nightly_at"], ENV_NAMES["nightly_zone"]
    raw_at = (read_setting(env, at_name) or "20:00").strip()
    match = _CLOCK_TIME.match(raw_at)
    if match is None:
        raise ConfigError(f"{at_name}: expected a local time HH:MM (e.g. 20:00), got {raw_at!r}")
    zone = (read_setting(env, zone_name) or "America/Los_Angeles").strip()
    try:
        ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(
            f"{zone_name}: not a time zone name (IANA, e.g. America/Los_Angeles): {zone!r}"
        ) from None
    return {
        "nightly_at": time(int(match[1]), int(match[2])),
        "nightly_zone": zone,
        "nightly_overlap": timedelta(seconds=_seconds(env, ENV_NAMES["nightly_overlap"], 600.0)),
        "nightly_bulk_from": _count(env, ENV_NAMES["nightly_bulk_from"], 2000, most=10_000_000),
    }
