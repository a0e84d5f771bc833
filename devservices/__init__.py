"""Local services the project runs for itself, without Docker: Apache Kafka and PostgreSQL.

`up`, `down` and `status` take a service name; the fixtures and `optout-sync services` use only
this face. Logs are in `<state_dir>/services/<name>.log`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import ModuleType

from devservices.settings import ServiceSettings

from . import broker, database
from .process import Lease, ServiceError, ServiceStatus

__all__ = ["SERVICE_NAMES", "ServiceError", "ServiceStatus", "down", "lease", "status", "up"]

_SERVICES: dict[str, ModuleType] = {"kafka": broker, "postgres": database}
SERVICE_NAMES: tuple[str, ...] = tuple(_SERVICES)


def _service(name: str) -> ModuleType:
    try:
        return _SERVICES[name]
    except KeyError:
        raise ServiceError(f"unknown service {name!r}; known: {', '.join(SERVICE_NAMES)}") from None


def up(name: str, settings: ServiceSettings) -> ServiceStatus:
    """Start `name` unless it runs already; raises ServiceError (with the log tail) on failure."""
    start: Callable[[ServiceSettings], ServiceStatus] = _service(name).up
    return start(settings)


def down(name: str, settings: ServiceSettings) -> int | None:
    """Stop `name` if `up` started it and it still runs; returns the pid it stopped."""
    stop: Callable[[ServiceSettings], int | None] = _service(name).down
    return stop(settings)


def status(name: str, settings: ServiceSettings) -> ServiceStatus:
    report: Callable[[ServiceSettings], ServiceStatus] = _service(name).status
    return report(settings)


@contextmanager
def lease(name: str, settings: ServiceSettings) -> Iterator[ServiceStatus]:
    """`name` running for the duration; stopped afterwards only if this lease started it and no
    other lease (another test session) still holds it."""
    module = _service(name)
    claim = Lease(module.paths(settings))
    try:
        current = up(name, settings)
        try:
            yield current
        finally:
            if current.started and claim.release_is_last():
                down(name, settings)
    finally:
        claim.close()
