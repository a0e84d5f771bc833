"""The command line end to end, as a user runs it: the main job twice, `person`, `dlq`, and a
bad setting stopping start-up with its name."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.e2e.cli import optout_sync
from tests.kafka_scratch import scratch_suffix

REPO = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.kafka]


@pytest.fixture
def env(kafka_bootstrap: str, tmp_path: Path) -> dict[str, str]:
    import os

    suffix = scratch_suffix(kafka_bootstrap, 8)
    return {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "OPTOUT_STATE_DIR": str(tmp_path),
        "OPTOUT_TOPIC_INBOUND": f"e2e.changes.{suffix}",
        "OPTOUT_TOPIC_STATE": f"e2e.state.{suffix}",
        "OPTOUT_CONSUMER_GROUP": f"e2e-{suffix}",
        "COLUMNS": "160",
    }


def test_the_main_job_runs_twice_and_ends_with_the_persons_state(env: dict[str, str]) -> None:
    for run in (1, 2):
        # logs at INFO: where an email must not be; a busy machine may take a while to join
        result = optout_sync("-v", "demo", "--timeout", "300", env=env, timeout=400)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "person:demo-ada" in result.stdout and "opted out" in result.stdout
        assert "pending link" in result.stdout  # grace has no Salesforce id
        assert "invalid_json" in result.stdout and "invalid_salesforce_id" in result.stdout
        assert "1 already recorded" in result.stdout, f"run {run}: the duplicate is ignored"
        assert " INFO consumers." in result.stderr, "INFO is logged: the next check bites"
        for email in ("grace@example.com", "ada@example.com"):
            assert email not in result.stderr.lower(), "emails stay out of the logs"
        # No org configured: the requirements are checked on the local sandbox, over HTTPS.
        assert "Salesforce: local sandbox at https://127.0.0.1:" in result.stdout
        assert "Contact.HasOptedOutOfEmail: present" in result.stdout
        assert "Lead.HasOptedOutOfEmail: present" in result.stdout
        # The live push set the checkbox (in run 1; the org keeps it) and the history says so.
        assert "Contact 0035g00000AbCdEAAV: HasOptedOutOfEmail = True" in result.stdout
        assert "Salesforce accepted at " in result.stdout
        assert f"live push: {2 - run} accepted" in result.stdout, "pushed once, not again"
        # Then tonight's nightly pass, planned: Ada is checked there and known here, Grace waits.
        assert "nightly pass, planned" in result.stdout
        assert "to import: 0 unsubscribes (1 already known here); conflicts: 0" in result.stdout
        assert "to push: 0 opt-outs (by nothing); pending link (no Salesforce id): 1" in (
            result.stdout
        )
        # It ends with the run's audit from the read models: Ada via sales (a rep) and via
        # marketing, Grace's address via marketing (an email link).
        audit = result.stdout[result.stdout.index("audit of this run") :]
        assert "via sales      1" in audit and "via marketing  2" in audit
        assert "person:demo-ada" in audit and "address grace@example.com" in audit
        assert "Rita Rep" in audit and "email_link" in audit

    state = json.loads(optout_sync("person", "demo-ada", "--json", env=env).stdout)
    assert state["opted_out"] is True
    assert state["latest_unsubscribe"]["source"] == "marketing"  # the repeat, made later
    assert state["salesforce_id"] == "0035g00000AbCdEAAV"
    # Two runs, each: a sales unsubscribe (its duplicate ignored) and a marketing repeat; and
    # Salesforce's acceptance of the first run's push, the proof, naming the record and field.
    changes = [e["source"] for e in state["history"] if e["change"] == "unsubscribed"]
    assert changes == ["sales", "marketing"] * 2
    [accepted] = [e for e in state["history"] if e["change"] == "salesforce_accepted"]
    assert (accepted["record_id"], accepted["field"]) == (
        "0035g00000AbCdEAAV",
        "HasOptedOutOfEmail",
    )

    by_email = json.loads(optout_sync("person", "Grace@Example.com", "--json", env=env).stdout)
    assert by_email["address"]["pending_link"] is True and by_email["persons"] == []

    letters = optout_sync("dlq", "list", "--json", env=env)
    assert letters.returncode == 0
    codes = [json.loads(line)["code"] for line in letters.stdout.splitlines()]
    redriven = optout_sync("dlq", "redrive", "--code", "invalid_json", "--json", env=env)
    assert redriven.returncode == 0 and json.loads(redriven.stdout)["redriven"] == 2
    unknown = optout_sync("dlq", "redrive", "9:999", env=env)
    assert unknown.returncode == 1 and "no dead letter with id 9:999" in unknown.stderr
    assert sorted(codes) == [
        "invalid_json",
        "invalid_json",
        "invalid_salesforce_id",
        "invalid_salesforce_id",
    ]


def test_an_unknown_person_is_an_error_with_a_non_zero_exit(env: dict[str, str]) -> None:
    before_anything = optout_sync("person", "nobody-here", env=env)
    assert before_anything.returncode == 1 and "ingested" in before_anything.stderr
    ingest = optout_sync("ingest", "--idle-exit", "1", "--json", env=env)
    assert ingest.returncode == 0, ingest.stderr
    assert json.loads(ingest.stdout)["recorded"] == 0
    result = optout_sync("person", "nobody-here", env=env)
    assert result.returncode == 1 and "no such person" in result.stderr


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("OPTOUT_DATABASE_URL", "mysql://db/optout"),
        ("OPTOUT_KAFKA_PORT", "ninety"),
        ("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9"),  # nothing listens there
        ("OPTOUT_DATABASE_URL", "postgresql://nobody:secret@127.0.0.1:9/none"),
    ],
)
def test_a_bad_setting_stops_start_up_and_names_the_setting(
    env: dict[str, str], name: str, value: str
) -> None:
    quick = {"OPTOUT_KAFKA_CONNECT_TIMEOUT": "3"}  # an unreachable broker fails fast
    result = optout_sync("ingest", env={**env, **quick, name: value}, timeout=120)
    assert result.returncode != 0
    assert name in result.stderr and "Traceback" not in result.stderr
    assert "secret" not in result.stderr


def test_the_pusher_without_an_org_stops_naming_the_setting(env: dict[str, str]) -> None:
    assert optout_sync("push", "--help", env=env).returncode == 0
    no_org = {k: v for k, v in env.items() if not k.startswith("SALESFORCE_")}
    result = optout_sync("push", "--idle-exit", "1", env=no_org)
    assert result.returncode == 1 and "SALESFORCE_USERNAME" in result.stderr, result.stderr
