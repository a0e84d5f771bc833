"""find_opt_out_field: the standard checkbox, the Marketo checkbox by label or by name, or FieldMissing."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from adapters.salesforce import FieldMissing, SalesforceOrg, connect
from adapters.settings import load
from domain.identity import RecordType
from domain.opt_out_field import OptOutField, live_push_field
from sandbox import Sandbox, running_sandbox
from tests.salesforce.conftest import connect_to, flag, new_records, org_env, writes

pytestmark = [pytest.mark.sandbox, pytest.mark.timeout(120)]
ORG_SPECIFIC_NAME = "Acme_MSI_Unsub__c"  # the package's field under another API name


@pytest.fixture(scope="module")
def renamed_org() -> Iterator[Sandbox]:
    with running_sandbox(marketo_field=ORG_SPECIFIC_NAME) as running:
        yield running


@pytest.fixture(scope="module")
def org_without_marketo() -> Iterator[Sandbox]:
    with running_sandbox(marketo_field=None) as running:
        yield running


def test_email_opt_out_is_the_standard_checkbox_on_both_objects(org: SalesforceOrg) -> None:
    target = org.find_opt_out_field(OptOutField.EMAIL_OPT_OUT)
    assert (target.contact, target.lead) == ("HasOptedOutOfEmail", "HasOptedOutOfEmail")


def test_the_marketo_checkbox_is_found_by_its_label_whatever_its_api_name(
    renamed_org: Sandbox,
) -> None:
    org = connect_to(renamed_org, OPTOUT_OPT_OUT_FIELD="marketo_sales_opt_out")
    target = org.find_opt_out_field(OptOutField.MARKETO_SALES_OPT_OUT)
    assert (target.contact, target.lead) == (ORG_SPECIFIC_NAME, ORG_SPECIFIC_NAME)
    (lead,) = new_records(renamed_org, "Lead", 1)
    (result,) = org.push_opt_outs(writes([lead], RecordType.LEAD, target))
    assert result.accepted and result.field == ORG_SPECIFIC_NAME
    assert flag(renamed_org, lead, ORG_SPECIFIC_NAME) and not flag(renamed_org, lead)


def test_a_marketo_checkbox_missing_from_the_org_is_field_missing(
    org_without_marketo: Sandbox,
) -> None:
    org = connect_to(org_without_marketo)
    org_without_marketo.clear_calls()
    with pytest.raises(FieldMissing) as missing:
        org.find_opt_out_field(OptOutField.MARKETO_SALES_OPT_OUT)
    assert missing.value.object == "Contact"
    assert "Marketo Sales Opt Out" in str(missing.value)
    assert "OPTOUT_MARKETO_FIELD_NAME" in str(missing.value)
    assert not missing.value.retryable
    assert all(c.method == "GET" for c in org_without_marketo.call_log)  # nothing written
    with pytest.raises(FieldMissing, match=r"Contact\.mkto_si__Marketo_Sales_Opt_Out__c"):
        org.find_opt_out_field(
            OptOutField.MARKETO_SALES_OPT_OUT, "mkto_si__Marketo_Sales_Opt_Out__c"
        )
    assert org.find_opt_out_field(OptOutField.EMAIL_OPT_OUT).contact == "HasOptedOutOfEmail"


def test_a_configured_name_must_be_a_writable_checkbox(
    sandbox: Sandbox, org: SalesforceOrg
) -> None:
    marketo = sandbox.config.marketo_field
    assert marketo is not None
    target = org.find_opt_out_field(OptOutField.MARKETO_SALES_OPT_OUT, marketo.upper())
    assert target.contact == target.lead == marketo  # API names ignore case; the org's spelling
    with pytest.raises(FieldMissing, match="not a checkbox"):
        org.find_opt_out_field(OptOutField.MARKETO_SALES_OPT_OUT, "Email")
    with pytest.raises(FieldMissing, match="not writable"):
        org.find_opt_out_field(OptOutField.MARKETO_SALES_OPT_OUT, "IsDeleted")


def test_with_the_nightly_sync_off_the_live_push_writes_email_opt_out(sandbox: Sandbox) -> None:
    settings = load(
        org_env(sandbox, OPTOUT_OPT_OUT_FIELD="marketo_sales_opt_out", OPTOUT_NIGHTLY_SYNC="off")
    )
    org = connect(settings)
    target = org.find_opt_out_field(
        live_push_field(settings.nightly_sync, settings.opt_out_field),
        settings.marketo_field_name,
    )
    (contact,) = new_records(sandbox, "Contact", 1)
    (result,) = org.push_opt_outs(writes([contact], RecordType.CONTACT, target))
    assert result.accepted and result.field == "HasOptedOutOfEmail"
    assert flag(sandbox, contact)
    assert not flag(sandbox, contact, str(sandbox.config.marketo_field))
