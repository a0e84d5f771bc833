"""The fault tests' mixed stream, recorded in shuffled batches on an in-memory store, leaves the
answer the independent oracle computes (so a fault test that checks the oracle checks the rule)."""

from __future__ import annotations

import random

from adapters.event_store import environment
from consumers.ingest import to_change
from domain.application import ChangeRecorder
from domain.identity import AddressKeys
from tests.integration.mixed_stream import expected_answers, mixed_changes


def test_the_mixed_stream_in_any_order_leaves_the_oracles_answers() -> None:
    keys = AddressKeys(b"k" * 32)
    changes = mixed_changes(3000, persons=200, seed=11)
    log = ChangeRecorder(env=environment("sqlite:///:memory:", create_table=True))
    arrival = changes + random.Random(3).sample(changes, 300)  # re-produced duplicates too
    random.Random(5).shuffle(arrival)
    for start in range(0, len(arrival), 97):
        log.record([to_change(c, keys) for c in arrival[start : start + 97]])
    answers, salesforce = expected_answers(changes, keys)
    assert sum(answers.values()) not in (0, len(answers)), "the stream exercises both answers"
    wrong = {key: want for key, want in answers.items() if log.standing(key)[1].opted_out != want}
    assert not wrong, f"{len(wrong)} of {len(answers)} answers differ"
    for key, salesforce_id in salesforce.items():
        if key.startswith("person:"):
            person = log.person(key)
            assert person is not None and person.salesforce_id == salesforce_id
    assert len(list(log.all_changes())) == len(changes)
