"""What the development services read: where they keep their data, their downloads and which
ports they listen on. The product's own settings are `adapters.settings`; only the default
bootstrap address there follows OPTOUT_KAFKA_PORT, so the engine finds the local broker."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import msgspec

DEFAULT_KAFKA_PORT = 19092
DEFAULT_POSTGRES_PORT = 15432


class SettingError(ValueError):
    """A development-service setting is malformed; the message names it."""


class ServiceSettings(msgspec.Struct, frozen=True, kw_only=True):
    # OPTOUT_STATE_DIR: the services' data and logs (and the embedded store).
    state_dir: Path
    # OPTOUT_CACHE_DIR: downloads kept between runs (the Kafka jars).
    cache_dir: Path
    # OPTOUT_KAFKA_PORT: the local broker's port (its controller listens on the next one).
    kafka_port: int = DEFAULT_KAFKA_PORT
    # OPTOUT_POSTGRES_PORT: the local PostgreSQL's port.
    postgres_port: int = DEFAULT_POSTGRES_PORT


def state_home(env: Mapping[str, str]) -> Path:
    base = env.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(env.get("OPTOUT_STATE_DIR") or Path(base) / "optout-sync")


def _cache_home(env: Mapping[str, str]) -> Path:
    base = env.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(env.get("OPTOUT_CACHE_DIR") or Path(base) / "optout-sync")


def port(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if not raw:
        return default
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise SettingError(f"{name}: expected a TCP port number (1-65535), got {raw!r}")
    return int(raw)


def load(env: Mapping[str, str] | None = None) -> ServiceSettings:
    env = os.environ if env is None else env
    return ServiceSettings(
        state_dir=state_home(env),
        cache_dir=_cache_home(env),
        kafka_port=port(env, "OPTOUT_KAFKA_PORT", DEFAULT_KAFKA_PORT),
        postgres_port=port(env, "OPTOUT_POSTGRES_PORT", DEFAULT_POSTGRES_PORT),
    )
