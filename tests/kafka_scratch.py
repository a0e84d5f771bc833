"""Topics a test makes on the shared broker are deleted when the test ends.

A broker keeps a file open for every partition it holds. Runs that left their topics behind took
the shared broker to its open-file limit, and it died mid-suite of "Too many open files" (every
later Kafka test then timed out). So every test names its topics with `scratch_suffix`, and the
root conftest deletes the ones it made as the test ends. A private broker's topics go with its
state dir.
"""

from __future__ import annotations

import uuid

from kafka import KafkaAdminClient

# Prefixes of the topics the suite and the benches make; a session that starts the local broker
# deletes what earlier runs left with them.
SCRATCH_PREFIXES = ("test.", "e2e.", "bench.")
_TIMEOUT_MS = 30_000

# bootstrap servers -> suffixes named during the running test
_named: dict[str, list[str]] = {}
_admins: dict[str, KafkaAdminClient] = {}


def scratch_suffix(bootstrap_servers: str, length: int = 10) -> str:
    """A fresh suffix for topic and group names, whose topics are deleted when the test ends."""
    suffix = uuid.uuid4().hex[:length]
    _named.setdefault(bootstrap_servers, []).append(suffix)
    return suffix


def delete_named(shared_bootstrap: str | None) -> list[str]:
    """Deletes the topics named during this test on the shared broker; returns their names."""
    named = _named.pop(shared_bootstrap, []) if shared_bootstrap else []
    _named.clear()  # names on a private broker: its topics go with its state dir
    if not named:
        return []
    assert shared_bootstrap is not None
    admin = _admin(shared_bootstrap)
    doomed = [topic for topic in admin.list_topics() if any(part in topic for part in named)]
    if doomed:
        admin.delete_topics(doomed, timeout_ms=_TIMEOUT_MS)
    return doomed


def delete_leftovers(bootstrap_servers: str) -> int:
    """Deletes every topic with a scratch prefix (runs before this one left them); their count."""
    admin = _admin(bootstrap_servers)
    doomed = [topic for topic in admin.list_topics() if topic.startswith(SCRATCH_PREFIXES)]
    for start in range(0, len(doomed), 500):
        admin.delete_topics(doomed[start : start + 500], timeout_ms=_TIMEOUT_MS)
    return len(doomed)


def close() -> None:
    for admin in _admins.values():
        admin.close()
    _admins.clear()


def _admin(bootstrap_servers: str) -> KafkaAdminClient:
    if bootstrap_servers not in _admins:
        _admins[bootstrap_servers] = KafkaAdminClient(
            bootstrap_servers=bootstrap_servers,
            client_id="optout-tests-scratch",
            request_timeout_ms=_TIMEOUT_MS,
        )
    return _admins[bootstrap_servers]
