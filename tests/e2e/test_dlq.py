"""`optout-sync dlq`: each redrive is recorded, a second one of the same letter needs --again, and
`dlq list` reads a page at a time, in order."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from tests.e2e.cli import isolated_env, optout_sync

pytestmark = [pytest.mark.kafka]


def _dead_lettered(env: dict[str, str], count: int) -> list[dict[str, object]]:
    """`count` messages that are not JSON, through the real ingest; their dead letters."""
    assert optout_sync("init", env=env).returncode == 0
    sender = KafkaProducer(bootstrap_servers=env["KAFKA_BOOTSTRAP_SERVERS"], acks="all")
    for index in range(count):
        sender.send(env["OPTOUT_TOPIC_INBOUND"], key=f"bad-{index}".encode(), value=b"{oops")
    sender.flush(timeout=60)
    sender.close()
    ingest = optout_sync("ingest", "--no-prepare", "--idle-exit", "3", "--json", env=env)
    assert ingest.returncode == 0, ingest.stderr
    assert json.loads(ingest.stdout)["dead_lettered"] == count
    return _listed(env)


def _listed(env: dict[str, str], *args: str) -> list[dict[str, object]]:
    listed = optout_sync("dlq", "list", "--json", *args, env=env)
    assert listed.returncode == 0, listed.stderr
    return [json.loads(line) for line in listed.stdout.splitlines()]


def _inbound_size(env: dict[str, str]) -> int:
    reader = KafkaConsumer(bootstrap_servers=env["KAFKA_BOOTSTRAP_SERVERS"], group_id=None)
    try:
        topic = env["OPTOUT_TOPIC_INBOUND"]
        partitions = [TopicPartition(topic, p) for p in reader.partitions_for_topic(topic) or ()]
        return sum(reader.end_offsets(partitions).values())
    finally:
        reader.close()


def test_a_second_redrive_of_a_letter_needs_again(kafka_bootstrap: str, tmp_path: Path) -> None:
    env = isolated_env(kafka_bootstrap, tmp_path)
    letters = _dead_lettered(env, 3)
    first, second, third = (str(letter["id"]) for letter in letters)
    assert [letter["redriven"] for letter in letters] == [None] * 3

    sent = optout_sync("dlq", "redrive", first, second, "--json", env=env)
    assert sent.returncode == 0, sent.stderr
    assert json.loads(sent.stdout) == {"redriven": 2, "ids": [first, second], "left_out": []}
    receipts = {str(letter["id"]): letter["redriven"] for letter in _listed(env)}
    assert receipts[third] is None
    for letter_id in (first, second):
        receipt = receipts[letter_id]
        assert isinstance(receipt, dict) and receipt["letter"] == letter_id
        assert str(receipt["to"]).startswith(f"{env['OPTOUT_TOPIC_INBOUND']}:")
    assert _inbound_size(env) == 3 + 2

    refused = optout_sync("dlq", "redrive", first, env=env)
    assert refused.returncode == 1
    assert f"already re-driven: {first} (at " in refused.stderr and "--again" in refused.stderr
    assert _inbound_size(env) == 3 + 2, "nothing was re-sent"

    again = optout_sync("dlq", "redrive", first, "--again", "--json", env=env)
    assert again.returncode == 0 and json.loads(again.stdout)["ids"] == [first]
    assert _inbound_size(env) == 3 + 3

    # --all leaves out what was re-driven before (and says so) and sends the rest ...
    rest = optout_sync("dlq", "redrive", "--all", "--json", env=env)
    assert rest.returncode == 0, rest.stderr
    assert json.loads(rest.stdout) == {"redriven": 1, "ids": [third], "left_out": [first, second]}
    # ... and refuses, naming them, when nothing new is left.
    nothing_new = optout_sync("dlq", "redrive", "--all", env=env)
    assert nothing_new.returncode == 1
    assert all(letter_id in nothing_new.stderr for letter_id in (first, second, third))
    assert _inbound_size(env) == 3 + 4


def test_dlq_list_pages_in_partition_and_offset_order(kafka_bootstrap: str, tmp_path: Path) -> None:
    env = isolated_env(kafka_bootstrap, tmp_path)
    everything = _dead_lettered(env, 7)
    ids = [str(letter["id"]) for letter in everything]
    order = [tuple(map(int, letter_id.split(":"))) for letter_id in ids]
    assert order == sorted(order) and len(set(ids)) == 7
    assert len({partition for partition, _ in order}) > 1, "keys spread over partitions"

    pages: list[list[str]] = []
    start: str | None = None
    while True:
        shown = optout_sync(
            "dlq", "list", "--limit", "3", *(["--from", start] if start else []), env=env
        )
        assert shown.returncode == 0, shown.stderr
        listed = _listed(env, "--limit", "3", *(["--from", start] if start else []))
        pages.append([str(letter["id"]) for letter in listed])
        if "more: optout-sync dlq list --from " not in shown.stdout:
            break
        start = shown.stdout.split("--from ")[1].split()[0]
        assert start == ids[3 * len(pages)], "the next page starts at the next letter"
    assert [len(page) for page in pages] == [3, 3, 1]
    assert [letter_id for page in pages for letter_id in page] == ids

    bad = optout_sync("dlq", "list", "--from", "zero", env=env)
    assert bad.returncode == 2 and "partition:offset" in bad.stderr
