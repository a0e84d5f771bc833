"""The nightly pass's reading side: which field, which records of persons to look at again, and
every checked Contact and Lead since the object's watermark (see `consumers.nightly`)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from adapters.salesforce import STANDARD_OPT_OUT, FieldMissing, OptOutTarget, SalesforceOrg
from adapters.salesforce_bulk import (
    REST_PAGE,
    bulk_query,
    checked_soql,
    parse_modstamp,
    query_rows,
)
from adapters.salesforce_client import OrgClient, RequestRefused
from adapters.settings import Settings
from domain.application import ChangeRecorder
from domain.identity import RecordType, aggregate_id, to_18
from domain.nightly import CheckedRecord, Persons, removed_since
from domain.opt_out_field import OptOutField
from domain.push import Owed

OBJECTS = (RecordType.CONTACT, RecordType.LEAD)
REST_MOST = 3 * REST_PAGE  # an incremental read larger than this goes through a Bulk query
CHECK_BATCH = 300  # record ids per read of removed persons' records
BULK_QUERY_CALLS = 3  # create, one poll, one page of results


def tracking_name(object_type: RecordType) -> str:
    return f"nightly:{object_type}"


def epoch_ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)


class PassRefused(Exception):
    """The pass cannot run (the nightly sync is off, the opt-out field is missing): nothing was
    written anywhere."""


@dataclass
class Read:
    object_type: RecordType
    records: list[CheckedRecord] = field(default_factory=list)
    watermark: datetime | None = None  # where the next incremental read starts (before overlap)
    full: bool = False
    checks: int = 0  # reads of removed persons' records


@dataclass
class NightlyPull:
    """Reads only: the describe (when asked), REST pages and Bulk query jobs."""

    store: ChangeRecorder
    org: SalesforceOrg
    client: OrgClient
    config: Settings
    sleep: Callable[[float], None] = time.sleep

    @property
    def overlap(self) -> timedelta:
        return self.config.nightly_overlap

    def target(self, *, describe: bool) -> OptOutTarget:
        """The field's API names: described when the pass will write (is it a writable checkbox?)
        or when only its label names it; otherwise a query naming it proves it exists."""
        choice, named = self.config.opt_out_field, self.config.marketo_field_name
        if describe or (choice is OptOutField.MARKETO_SALES_OPT_OUT and not named):
            try:
                return self.org.find_opt_out_field(choice, named)
            except FieldMissing as missing:
                raise PassRefused(_field_missing(missing)) from None
        name = STANDARD_OPT_OUT if choice is OptOutField.EMAIL_OPT_OUT else str(named)
        return OptOutTarget(choice=choice, contact=name, lead=name)

    def removed_records(self, persons: Persons, since: int) -> set[str]:
        """Records of persons whose unsubscribe was removed since the last pass, still removed."""
        keys = {aggregate_id(key): key for key in persons.by_key}
        found = set()
        for person_id in removed_since(self.store, since):
            key = keys.get(person_id)
            person = persons.by_key.get(key) if key else None
            if key and person is not None and person.salesforce_id and persons.removed(key):
                found.add(to_18(person.salesforce_id))
        return found

    def read(
        self, object_type: RecordType, field_name: str, removed: set[str], dry_run: bool
    ) -> Read:
        read = Read(object_type)
        stored = self.store.position(tracking_name(object_type))
        try:
            if stored is None:
                read.full = True
                if dry_run:
                    rows, _ = query_rows(self.client, checked_soql(object_type, field_name))
                else:
                    soql = checked_soql(object_type, field_name)
                    result = bulk_query(self.client, soql, self.sleep)
                    rows, read.watermark = result.rows, result.started_at
            else:
                since = datetime.fromtimestamp(stored / 1000, UTC) - self.overlap
                soql = checked_soql(object_type, field_name, since=since)
                rows, total = query_rows(self.client, soql, most=None if dry_run else REST_MOST)
                if total > len(rows):
                    rows = bulk_query(self.client, soql, self.sleep).rows
            read.records = [_checked(row) for row in rows]
            if not read.full:
                prefix = "003" if object_type is RecordType.CONTACT else "00Q"
                seen = {record.record_id for record in read.records}
                ids = sorted(r for r in removed if r.startswith(prefix) and r not in seen)
                for start in range(0, len(ids), CHECK_BATCH):
                    soql = checked_soql(
                        object_type, field_name, ids=ids[start : start + CHECK_BATCH]
                    )
                    rows, _ = query_rows(self.client, soql)
                    read.records.extend(_checked(row) for row in rows)
                    read.checks += 1
        except RequestRefused as refused:
            if refused.code == "INVALID_FIELD":
                missing = FieldMissing(
                    str(object_type), field_name, "no such field in this org (OPTOUT_OPT_OUT_FIELD)"
                )
                raise PassRefused(_field_missing(missing)) from None
            raise
        stamps = [record.modstamp for record in read.records]
        if stamps:
            read.watermark = max([*stamps, *([read.watermark] if read.watermark else [])])
        return read


def estimate_calls(reads: Sequence[Read], owed: Sequence[Owed], bulk: bool) -> int:
    """API calls a pass would spend: reads, the field's describe when writing, the push."""
    calls = 0
    for read in reads:
        if read.full:
            calls += BULK_QUERY_CALLS
        else:
            calls += max(1, math.ceil((len(read.records) - read.checks) / REST_PAGE)) + read.checks
    if owed:
        calls += 2  # describe Contact and Lead: is the field a writable checkbox?
        if bulk:
            objects = {o.object_type for o in owed}
            calls += 5 * len(objects)  # create, upload, close, poll, failed rows
        else:
            calls += math.ceil(len(owed) / 200)
    return calls


def _checked(row: dict[str, Any]) -> CheckedRecord:
    return CheckedRecord(
        record_id=to_18(str(row["Id"])),
        modstamp=parse_modstamp(str(row["SystemModstamp"])),
        email=str(row.get("Email") or "") or None,
    )


def _field_missing(missing: FieldMissing) -> str:
    return (
        f"the opt-out field is missing: {missing} — nothing was read into the store or written "
        "to Salesforce (OPTOUT_OPT_OUT_FIELD / OPTOUT_MARKETO_FIELD_NAME)"
    )
