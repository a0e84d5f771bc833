"""Email scope (PRODUCT.md §1.7) and pending links resolved by email, end to end: changes produced
to Kafka, the ingest, the pusher, and the sandbox through the unmodified simple-salesforce client."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from adapters.inbound import PersonRef
from adapters.settings import Settings, load
from consumers import bootstrap
from consumers.pusher import PushStats
from projections.person_state import PersonState, state_of
from sandbox import Sandbox, running_sandbox
from tests.factories import good_change
from tests.integration.ingest_harness import env_of, reader
from tests.integration.test_push import ADMIN, IDLE_S, PUSH_CALLS, ingest, outcomes, state
from tests.salesforce.conftest import flag, org_env

pytestmark = [pytest.mark.kafka]
LOOKUPS = "/query"


@pytest.fixture
def org() -> Iterator[Sandbox]:
    with running_sandbox() as running:
        yield running


def push(config: Settings, sandbox: Sandbox, **settings: str) -> PushStats:
    pusher = bootstrap.pusher(load({**env_of(config), **org_env(sandbox, **settings)}))
    try:
        return pusher.run(idle_exit_s=IDLE_S)
    finally:
        pusher.store.close()


def shared(sandbox: Sandbox, email: str) -> tuple[str, str]:
    """A Contact and a Lead carrying the same email (in another case: Salesforce ignores it)."""
    contact = sandbox.insert("Contact", LastName="Shared", Email=email)
    lead = sandbox.insert("Lead", LastName="Shared", Company="Acme", Email=email.upper())
    return contact, lead


def no_email_in_the_store(config: Settings, email: str) -> None:
    """The address is only in the erasable side table: never in an event, the history included."""
    store = reader(config)
    try:
        for notification in store.recorder.select_notifications(0, 100_000):
            assert email.encode() not in notification.state.lower()
    finally:
        store.close()


@pytest.mark.parametrize("scope", ["linked", "all"])
def test_a_lead_and_a_contact_sharing_an_email_under_each_scope(
    config: Settings, org: Sandbox, scope: str
) -> None:
    email = f"share-{scope}@scope.example"
    contact, lead = shared(org, email)
    linked = PersonRef(person_id=f"p-share-{scope}", email=email, salesforce_id=contact)
    ingest(config, good_change(person=linked))

    stats = push(config, org, OPTOUT_EMAIL_SCOPE=scope)

    assert flag(org, contact)
    accepted = outcomes(state(config, f"p-share-{scope}"), "salesforce_accepted")
    if scope == "linked":  # the vendor's way: the linked record only, no look-up
        assert not flag(org, lead)
        assert [e.record_id for e in accepted] == [contact]
        assert org.api_calls(LOOKUPS) == 0
    else:  # every record carrying the email, each written in the history
        assert flag(org, lead)
        assert sorted(e.record_id or "" for e in accepted) == sorted([contact, lead])
        assert org.api_calls(LOOKUPS) == 2  # one batched query per object
    assert org.api_calls(PUSH_CALLS) == 1 and stats.accepted == len(accepted)
    assert not any(write[2] is not True for write in org.store.checkbox_writes)
    no_email_in_the_store(config, email)

    assert push(config, org, OPTOUT_EMAIL_SCOPE=scope).written == 0  # a restart: nothing owed


def test_a_converted_lead_found_by_email_is_written_through_its_contact(
    config: Settings, org: Sandbox
) -> None:
    email = "converted@scope.example"
    contact, lead = shared(org, email)
    org.convert_lead(lead, contact)
    ingest(config, good_change(person=PersonRef(person_id="p-conv-all", email=email)))
    push(config, org, OPTOUT_EMAIL_SCOPE="all")
    assert flag(org, contact) and not flag(org, lead)
    accepted = outcomes(state(config, "p-conv-all"), "salesforce_accepted")
    assert sorted((e.record_id or "", e.written_id or "") for e in accepted) == sorted(
        [(contact, contact), (lead, contact)]
    )


def test_a_pending_link_stays_pending_by_default_and_is_resolved_by_a_later_person_linked(
    config: Settings, org: Sandbox
) -> None:
    email = "pending-default@scope.example"
    contact, lead = shared(org, email)
    ingest(config, good_change(person=PersonRef(email=email)))  # known only by email
    push(config, org)
    assert (flag(org, contact), flag(org, lead), org.api_calls()) == (False, False, 2)  # describes
    [waiting] = outcomes(state_of_address(config, email), "push_waiting")
    assert waiting.reason == "no_salesforce_id"

    link = PersonRef(person_id="p-pending", email=email, salesforce_id=lead)
    ingest(config, good_change(type="person_linked", person=link, actor=ADMIN, channel="manual"))
    push(config, org)
    assert flag(org, lead) and not flag(org, contact)  # the linked record, as the vendor does
    [accepted] = outcomes(state(config, "p-pending"), "salesforce_accepted")
    assert accepted.record_id == lead


@pytest.mark.parametrize(
    "settings", [{"OPTOUT_RESOLVE_BY_EMAIL": "on"}, {"OPTOUT_EMAIL_SCOPE": "all"}]
)
def test_a_pending_link_is_resolved_by_email(
    config: Settings, org: Sandbox, settings: dict[str, str]
) -> None:
    email = "pending-resolved@scope.example"
    contact, lead = shared(org, email)
    nobody = "nobody@scope.example"  # no record carries it: it stays pending, and says why
    ingest(
        config,
        good_change(person=PersonRef(email=email)),
        good_change(person=PersonRef(email=nobody)),
    )
    push(config, org, **settings)
    assert flag(org, contact) and flag(org, lead)
    assert org.api_calls(LOOKUPS) == 2 and org.api_calls(PUSH_CALLS) == 1  # both, one look-up
    accepted = outcomes(state_of_address(config, email), "salesforce_accepted")
    assert sorted(e.record_id or "" for e in accepted) == sorted([contact, lead])
    [waiting] = outcomes(state_of_address(config, nobody), "push_waiting")
    assert (waiting.reason or "").startswith("no_salesforce_id")
    assert "no Salesforce record carries the address" in (waiting.reason or "")
    no_email_in_the_store(config, email)
    no_email_in_the_store(config, nobody)


def state_of_address(config: Settings, email: str) -> PersonState:
    store = reader(config)
    try:
        found = state_of(store, bootstrap.key_of(config, email))
    finally:
        store.close()
    assert found is not None
    return found
