"""Persistence settings: turns the one database URL into the event store's environment.

SQLite is the embedded default; PostgreSQL is the production store. Tables are created once
(`create_tables`); long-running workers then start with CREATE_TABLE=n.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlsplit

from adapters.settings import ConfigError, Settings
from domain.application import OptOutLog

# Writers own their partitions, so a cached aggregate is current; a stale one is caught by the
# store's optimistic concurrency (IntegrityError) and the writer then forgets its cache.
WRITER_CACHE = {
    "AGGREGATE_CACHE_MAXSIZE": "200000",
    "AGGREGATE_CACHE_FASTFORWARD": "n",
    "DEEPCOPY_FROM_AGGREGATE_CACHE": "n",
}


def environment(database_url: str, *, create_table: bool = False) -> dict[str, str]:
    """The eventsourcing environment for a `sqlite:///path` or `postgresql://` URL."""
    url = urlsplit(database_url)
    env = {"CREATE_TABLE": "y" if create_table else "n"}
    if url.scheme == "sqlite":
        path = unquote(database_url[len("sqlite:///") :])
        if not path:
            raise ConfigError("OPTOUT_DATABASE_URL: a SQLite URL needs a file path")
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        env.update(
            PERSISTENCE_MODULE="eventsourcing.sqlite",
            SQLITE_DBNAME=path,
            SQLITE_LOCK_TIMEOUT="30",
        )
        return env
    if url.scheme in ("postgresql", "postgres"):
        if not url.hostname or not url.path.strip("/"):
            raise ConfigError(
                "OPTOUT_DATABASE_URL: a PostgreSQL URL is postgresql://user@host:port/db"
            )
        env.update(
            PERSISTENCE_MODULE="eventsourcing.postgres",
            POSTGRES_DBNAME=unquote(url.path.strip("/")),
            POSTGRES_HOST=url.hostname,
            POSTGRES_PORT=str(url.port or 5432),
            POSTGRES_USER=unquote(url.username or "postgres"),
            POSTGRES_PASSWORD=unquote(url.password or ""),
            POSTGRES_CONNECT_TIMEOUT="10",
            POSTGRES_POOL_SIZE="2",
            POSTGRES_MAX_OVERFLOW="4",
        )
        return env
    raise ConfigError(f"OPTOUT_DATABASE_URL: unsupported scheme {url.scheme!r}")


def create_tables(database_url: str) -> None:
    """Creates the event store's tables if missing (idempotent)."""
    OptOutLog(env=environment(database_url, create_table=True)).close()


def open_log(settings: Settings, *, writer: bool = False) -> OptOutLog:
    """The event log on the configured store; writers keep a trusted aggregate cache."""
    env = environment(settings.database_url)
    if writer:
        env.update(WRITER_CACHE)
    return OptOutLog(env=env)
