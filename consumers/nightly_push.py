"""The nightly pass's push: every owed opt-out set in Salesforce, through sObject Collections for a
small set and Bulk API 2.0 update jobs for a large one, every failed row handled as the live push
handles it — retried (a locked row, an unavailable org), written through the contact (a converted
Lead), or recorded as refused — and turned into the person's outcome events.

A row still failing at the end of the pass is recorded as refused *to be retried*, which the live
pusher reads back from the log and retries with its own back-off.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from adapters.salesforce import (
    ApiLimitReached,
    BudgetSpent,
    OptOutTarget,
    OptOutWrite,
    PushOutcome,
    PushResult,
    RetryLater,
    SalesforceFailure,
    SalesforceOrg,
)
from adapters.salesforce_bulk import BulkUpdateResult, bulk_update, converted_contacts
from adapters.salesforce_client import OrgClient
from adapters.salesforce_push import CONVERTED_LEAD, classify
from domain.identity import RecordType
from domain.person import WaitingReason
from domain.push import Accepted, Outcome, Owed, Refused, Waiting

RETRIES = 3  # attempts within the pass for a locked row or an unavailable org
RETRY_PAUSE_S = (1.0, 3.0)
BULK_JOB_FAILED = "BULK_JOB_FAILED"


@dataclass
class PushTally:
    sent: int = 0  # records sent (each record once, however many attempts)
    accepted: int = 0
    failed: int = 0  # refused for good, to be retried by the live pusher, or waiting
    jobs_failed: int = 0
    outcomes: list[Outcome] = field(default_factory=list)


@dataclass
class NightlyPush:
    org: SalesforceOrg
    client: OrgClient
    target: OptOutTarget
    bulk_from: int  # owed records from which the Bulk API is used
    sleep: Callable[[float], None] = time.sleep

    def push(self, owed: Sequence[Owed]) -> PushTally:
        tally = PushTally(sent=len(owed))
        if not owed:
            return tally
        if len(owed) < self.bulk_from:
            self._collections(list(owed), tally)
        else:
            self._bulk(list(owed), tally)
        return tally

    # --- collections (push_opt_outs), with retries ----------------------------------------
    def _collections(self, owed: list[Owed], tally: PushTally) -> None:
        pending = list(owed)
        for attempt in range(RETRIES):
            if not pending:
                return
            if attempt:
                self.sleep(RETRY_PAUSE_S[min(attempt - 1, len(RETRY_PAUSE_S) - 1)])
            writes = [self._write(o) for o in pending]
            failure: SalesforceFailure | None = None
            try:
                results: Sequence[PushResult] = self.org.push_opt_outs(writes)
            except (RetryLater, BudgetSpent, ApiLimitReached) as failed:
                failure, results = failed, failed.completed
            # One result per write, each naming its record as given: two persons may owe one.
            asking: dict[str, list[Owed]] = {}
            for person in pending:
                asking.setdefault(str(person.record_id), []).append(person)
            retry: list[Owed] = []
            for result in results:
                person = asking[result.record_id].pop(0)
                if result.outcome is PushOutcome.RETRY and attempt < RETRIES - 1:
                    retry.append(person)
                else:
                    self._answered(person, result, tally)
            unanswered = [person for persons in asking.values() for person in persons]
            if isinstance(failure, BudgetSpent | ApiLimitReached):
                for person in unanswered:
                    self._waiting(person, failure, tally)
                return
            if failure is not None and attempt == RETRIES - 1:
                for person in unanswered:
                    self._refused(
                        person, failure.code or type(failure).__name__, str(failure), tally
                    )
                return
            pending = retry + unanswered

    def _write(self, owed: Owed) -> OptOutWrite:
        return OptOutWrite(
            record_id=str(owed.record_id), object_type=owed.object_type, target=self.target
        )

    def _answered(self, owed: Owed, result: PushResult, tally: PushTally) -> None:
        if result.accepted:
            self._accepted(
                owed,
                result.field,
                result.written_id,
                result.converted_contact_id,
                result.answered_at,
                tally,
            )
        elif result.outcome is PushOutcome.LIMIT:
            tally.failed += 1
            tally.outcomes.append(Waiting(owed.key, WaitingReason.API_LIMIT, result.message))
        else:
            will_retry = result.outcome is PushOutcome.RETRY
            self._refused(
                owed, result.error_code or "UNKNOWN_ERROR", result.message or "", tally, will_retry
            )

    def _accepted(
        self,
        owed: Owed,
        field_name: str,
        written_id: str | None,
        converted: str | None,
        at: datetime | None,
        tally: PushTally,
    ) -> None:
        record_id = str(owed.record_id)
        tally.accepted += 1
        tally.outcomes.append(
            Accepted(
                owed.key,
                record_id,
                str(owed.object_type),
                field_name,
                written_id or record_id,
                converted,
                at or datetime.now(UTC),
            )
        )

    def _refused(
        self, owed: Owed, code: str, message: str, tally: PushTally, will_retry: bool = True
    ) -> None:
        tally.failed += 1
        tally.outcomes.append(
            Refused(
                owed.key,
                str(owed.record_id),
                str(owed.object_type),
                code,
                message[:500],
                will_retry,
            )
        )

    def _waiting(self, owed: Owed, failure: SalesforceFailure, tally: PushTally) -> None:
        tally.failed += 1
        reason = (
            WaitingReason.BUDGET_SPENT
            if isinstance(failure, BudgetSpent)
            else WaitingReason.API_LIMIT
        )
        tally.outcomes.append(Waiting(owed.key, reason, str(failure)))

    # --- Bulk API 2.0 -----------------------------------------------------------------------
    def _bulk(self, owed: list[Owed], tally: PushTally) -> None:
        """A Lead job first, so that the contacts of converted Leads join the Contact job."""
        leads = [o for o in owed if o.object_type is RecordType.LEAD]
        contacts = [o for o in owed if o.object_type is RecordType.CONTACT]
        retry: list[Owed] = []
        converted: dict[str, list[Owed]] = {}  # contact id -> the converted Leads it stands for
        if leads:
            result = self._job(RecordType.LEAD, leads, tally)
            if result is not None:
                failures = {f.record_id: f for f in result.failed}
                turned = [
                    o
                    for o in leads
                    if (f := failures.get(str(o.record_id))) and f.code == CONVERTED_LEAD
                ]
                contact_of = (
                    converted_contacts(self.client, [str(o.record_id) for o in turned])
                    if turned
                    else {}
                )
                for person in leads:
                    failure = failures.get(str(person.record_id))
                    if failure is None:
                        self._row_done(person, result, tally)
                    elif failure.code == CONVERTED_LEAD:
                        contact = contact_of.get(str(person.record_id))
                        if contact is None:
                            self._refused(
                                person,
                                CONVERTED_LEAD,
                                "the Lead is converted and has no ConvertedContactId to write instead",
                                tally,
                                False,
                            )
                        else:
                            converted.setdefault(contact, []).append(person)
                    else:
                        self._row_failed(person, failure.code, failure.message, retry, tally)
        contact_ids = [str(o.record_id) for o in contacts]
        extra = [c for c in converted if c not in set(contact_ids)]
        if contacts or extra:
            stand_ins = [Owed(key="", record_id=c) for c in extra]
            result = self._job(RecordType.CONTACT, contacts + stand_ins, tally)
            if result is not None:
                failures = {f.record_id: f for f in result.failed}
                for person in contacts:
                    failure = failures.get(str(person.record_id))
                    if failure is None:
                        self._row_done(person, result, tally)
                    else:
                        self._row_failed(person, failure.code, failure.message, retry, tally)
                for contact, persons in converted.items():
                    failure = failures.get(contact)
                    for person in persons:
                        if failure is None and contact not in result.unprocessed:
                            self._accepted(
                                person,
                                self.target.contact,
                                contact,
                                contact,
                                result.answered_at,
                                tally,
                            )
                        elif failure is None:
                            self._job_failed(person, result, tally)
                        else:
                            self._row_failed(person, failure.code, failure.message, retry, tally)
            else:
                for persons in converted.values():
                    for person in persons:
                        self._refused(
                            person, BULK_JOB_FAILED, "the Contact job could not run", tally
                        )
        if retry:
            tally.failed -= len(retry)
            self._collections(retry, tally)

    def _job(
        self, object_type: RecordType, owed: list[Owed], tally: PushTally
    ) -> BulkUpdateResult | None:
        """One update job; a failure of the job's calls fails its rows (to be retried live)."""
        ids = list(dict.fromkeys(str(o.record_id) for o in owed))
        try:
            result = bulk_update(
                self.client, object_type, self.target.on(object_type), ids, self.sleep
            )
        except (BudgetSpent, ApiLimitReached) as failure:
            for person in owed:
                if person.key:
                    self._waiting(person, failure, tally)
            tally.jobs_failed += 1
            return None
        except SalesforceFailure as failure:
            for person in owed:
                if person.key:
                    self._refused(person, failure.code or BULK_JOB_FAILED, str(failure), tally)
            tally.jobs_failed += 1
            return None
        if result.state != "JobComplete":
            tally.jobs_failed += 1
        return result

    def _row_done(self, owed: Owed, result: BulkUpdateResult, tally: PushTally) -> None:
        if str(owed.record_id) in result.unprocessed:
            self._job_failed(owed, result, tally)
        else:
            self._accepted(
                owed,
                self.target.on(owed.object_type),
                str(owed.record_id),
                None,
                result.answered_at,
                tally,
            )

    def _job_failed(self, owed: Owed, result: BulkUpdateResult, tally: PushTally) -> None:
        message = f"Bulk job {result.job_id} ended {result.state}: {result.error_message or ''}"
        self._refused(owed, BULK_JOB_FAILED, message, tally)

    def _row_failed(
        self, owed: Owed, code: str, message: str, retry: list[Owed], tally: PushTally
    ) -> None:
        outcome = classify(code)
        if outcome is PushOutcome.RETRY:
            tally.failed += 1  # taken back if the retry is answered
            retry.append(owed)
        elif outcome is PushOutcome.LIMIT:
            tally.failed += 1
            tally.outcomes.append(Waiting(owed.key, WaitingReason.API_LIMIT, message))
        else:
            self._refused(owed, code, message, tally, will_retry=False)
