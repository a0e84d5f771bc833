"""Which Salesforce checkbox an unsubscribe sets: the setting's choice, and the vendor's live-push rule."""

from __future__ import annotations

from enum import StrEnum


class OptOutField(StrEnum):
    """The target field a deployment chooses (PRODUCT.md §1.2)."""

    EMAIL_OPT_OUT = "email_opt_out"  # the standard HasOptedOutOfEmail, on Contact and Lead
    MARKETO_SALES_OPT_OUT = "marketo_sales_opt_out"  # the Marketo Sales Insight custom checkbox


def live_push_field(nightly_enabled: bool, chosen: OptOutField) -> OptOutField:
    """The field the live push writes.

    The vendor's rule (PRODUCT.md §1.1): the chosen field while the nightly sync is enabled; with
    the nightly sync disabled the live push still sets the standard Email Opt Out.
    """
    return chosen if nightly_enabled else OptOutField.EMAIL_OPT_OUT


class EmailScope(StrEnum):
    """Which records an opt-out is written to (PRODUCT.md §1.7)."""

    LINKED = "linked"  # the person's own record, as the vendor does (the default)
    ALL = "all"  # every Lead and Contact carrying the person's email: the "durable unsubscribe"
