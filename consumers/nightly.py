"""The nightly bidirectional pass: Salesforce's checked opt-outs come home, ours go out.

1. Read every person here (one sweep of the store) and what is owed to Salesforce.
2. Read Salesforce — nothing is written before every read has succeeded, so a missing opt-out
   field (a query naming it is refused) leaves the store and the org untouched:
   - the first pass reads every checked Contact and Lead through a Bulk API 2.0 query job;
   - later passes read what changed since the object's `SystemModstamp` watermark, less an
     overlap (modstamps are not strictly ordered across transactions), by REST pages — or by a
     Bulk query when that read is large;
   - records of persons whose unsubscribe was removed since the last pass are read by id (a
     record still checked is a conflict even if it did not change).
3. Record the unsubscribes (`domain.nightly`), in chunks ordered by modstamp, each chunk in one
   transaction with the object's watermark (`Tracking("nightly:Contact", epoch ms)`): a crash
   re-reads from the last chunk stored, and each change's derived identity makes a repeat
   harmless.
4. Record what Salesforce already holds (records seen checked) as accepted, push the rest
   (`consumers.nightly_push`), and record the outcomes.
5. Record the pass itself (`domain.nightly_pass`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import cast

import msgspec
from eventsourcing.persistence import IntegrityError, Tracking

from adapters.salesforce import OptOutTarget, SalesforceOrg
from adapters.salesforce_client import OrgClient
from adapters.settings import Settings
from consumers.nightly_pull import (
    OBJECTS,
    NightlyPull,
    PassRefused,
    Read,
    epoch_ms,
    estimate_calls,
    tracking_name,
)
from consumers.nightly_push import NightlyPush
from domain.application import Change, ChangeRecorder, ChangesFailed, refusal_of
from domain.identity import AddressKeys, RecordType
from domain.nightly import CheckedRecord, Persons, PullPlan, log_position
from domain.nightly_pass import MANUAL, NightlyPass, last_done
from domain.person import Person
from domain.push import Accepted, Outcome, Owed, record_outcomes

__all__ = ["NightlyRun", "PassPlan", "PassRefused", "PassReport", "tracking_name"]

log = logging.getLogger(__name__)

IMPORT_CHUNK = 1000  # changes per transaction (with the watermark they reach)
OUTCOME_CHUNK = 500  # outcomes per transaction
RECORD_ATTEMPTS = 5  # an ingest writing the same persons meanwhile makes an attempt fail


class ConflictView(msgspec.Struct, frozen=True, kw_only=True):
    record_id: str
    person_key: str


class PassPlan(msgspec.Struct, kw_only=True):
    """What a pass would do (`--dry-run`), or did."""

    read: int  # checked records read from Salesforce
    full_reads: list[str]  # objects read in full (the first pass), the others since a watermark
    to_import: int
    already_known: int
    conflicts: list[ConflictView]
    to_push: int
    push_by: str  # collections | bulk | nothing
    pending_link: int
    estimated_api_calls: int


class PassReport(msgspec.Struct, kw_only=True):
    slot: str
    started_at: datetime
    finished_at: datetime
    outcome: str  # done | failed
    error: str | None
    read: int
    imported: int
    pushed: int
    accepted: int
    failed: int
    pending_link: int
    conflicts: list[ConflictView]
    api_calls: int
    log_position: int


@dataclass
class _Prepared:
    persons: Persons
    owed: list[Owed]
    pending_link: int
    target: OptOutTarget
    reads: list[Read]
    plan: PullPlan
    log_position: int
    seen_at: datetime

    @property
    def checked(self) -> set[str]:
        return {record.record_id for read in self.reads for record in read.records}

    def to_push(self) -> list[Owed]:
        checked = self.checked
        return [owed for owed in self.owed if owed.record_id not in checked]


@dataclass
class NightlyRun:
    """One pass over one store and one org. Not shared between threads."""

    store: ChangeRecorder
    org: SalesforceOrg
    client: OrgClient
    config: Settings
    keys: AddressKeys
    progress: Callable[[str], None] = lambda _: None
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)

    # --- the two ways to run ----------------------------------------------------------------
    def plan(self) -> PassPlan:
        """The plan, reading only (GET requests), writing nothing anywhere."""
        prepared = self._prepare(dry_run=True)
        return self._plan_of(prepared)

    def run(self, slot: str | None = None) -> PassReport:
        """Runs the pass and records it, done or failed; raises PassRefused (nothing written,
        nothing recorded) when it cannot run at all."""
        started = self.clock()
        calls = self.org.calls_made
        slot = slot or f"{MANUAL}:{started.isoformat(timespec='microseconds')}"
        report = PassReport(
            slot=slot,
            started_at=started,
            finished_at=started,
            outcome="done",
            error=None,
            read=0,
            imported=0,
            pushed=0,
            accepted=0,
            failed=0,
            pending_link=0,
            conflicts=[],
            api_calls=0,
            log_position=0,
        )
        try:
            prepared = self._prepare(dry_run=False)
            report.read = sum(len(read.records) for read in prepared.reads)
            report.pending_link = prepared.pending_link
            report.log_position = prepared.log_position
            report.conflicts = [
                ConflictView(record_id=c.record_id, person_key=c.person_key)
                for c in prepared.plan.conflicts
            ]
            self._write(prepared, report)
        except PassRefused:
            raise
        except Exception as error:  # recorded as failed, then raised: the scheduler retries it
            report.outcome, report.error = "failed", f"{type(error).__name__}: {error}"[:1000]
            report.slot = f"{slot}!failed@{self.clock().isoformat(timespec='seconds')}"
            self._finish(report, calls)
            raise
        self._finish(report, calls)
        for conflict in report.conflicts:
            log.warning(
                "conflict: the unsubscribe of %s was removed here but Salesforce record %s is "
                "still checked; it is back (uncheck the record in Salesforce to keep it removed)",
                conflict.person_key,
                conflict.record_id,
            )
        return report

    def _finish(self, report: PassReport, calls_before: int) -> None:
        report.finished_at = self.clock()
        report.api_calls = self.org.calls_made - calls_before
        self._record_pass(report)

    # --- reading ---------------------------------------------------------------------------
    def _prepare(self, *, dry_run: bool) -> _Prepared:
        seen_at = self.clock()
        position = log_position(self.store)
        self.progress("reading the store")
        persons = Persons.read(self.store)
        owed_all = persons.owed()
        owed = [o for o in owed_all if o.record_id is not None]
        pull = NightlyPull(self.store, self.org, self.client, self.config, self.sleep)
        target = pull.target(describe=bool(owed))
        previous = last_done(self.store)
        removed = pull.removed_records(persons, previous.log_position if previous else 0)
        reads = []
        for object_type in OBJECTS:
            self.progress(f"reading checked {object_type}s from Salesforce")
            reads.append(pull.read(object_type, target.on(object_type), removed, dry_run))
        records = [record for read in reads for record in read.records]
        plan = persons.plan_pull(records, self.keys, seen_at)
        return _Prepared(
            persons, owed, len(owed_all) - len(owed), target, reads, plan, position, seen_at
        )

    # --- writing ---------------------------------------------------------------------------
    def _write(self, prepared: _Prepared, report: PassReport) -> None:
        by_object: dict[RecordType, list[tuple[CheckedRecord, Change]]] = {o: [] for o in OBJECTS}
        for record, change in prepared.plan.changes:
            by_object[record.object_type].append((record, change))
        for read in prepared.reads:
            imported, refused = self._import(read, by_object[read.object_type])
            report.imported += imported
            report.failed += refused
        observed: list[Outcome] = [
            self._observed(key, record_id, modstamp, prepared.target)
            for key, record_id, modstamp in [
                *((o.key, o.record_id, o.modstamp) for o in prepared.plan.observed),
                *((c.person_key, r.record_id, r.modstamp) for r, c in prepared.plan.changes),
            ]
        ]
        self._record_outcomes(observed, "recording what Salesforce already holds")
        owed = prepared.to_push()
        if owed:
            self.progress(f"pushing {len(owed)} opt-outs to Salesforce")
            pusher = NightlyPush(
                self.org, self.client, prepared.target, self.config.nightly_bulk_from, self.sleep
            )
            tally = pusher.push(owed)
            report.pushed += tally.sent
            report.accepted += tally.accepted
            report.failed += tally.failed
            self._record_outcomes(tally.outcomes, "recording what Salesforce did")

    def _import(self, read: Read, changes: list[tuple[CheckedRecord, Change]]) -> tuple[int, int]:
        """(recorded, refused): chunks in modstamp order, each with the watermark it reaches."""
        name = tracking_name(read.object_type)
        stored = self.store.position(name) or 0
        imported = refused = 0
        ordered = sorted(changes, key=lambda pair: pair[0].modstamp)
        for start in range(0, len(ordered), IMPORT_CHUNK):
            chunk = ordered[start : start + IMPORT_CHUNK]
            valid = [change for _, change in chunk if refusal_of(change) is None]
            refused += len(chunk) - len(valid)
            position = max(stored + 1, epoch_ms(chunk[-1][0].modstamp))
            recorded, failed = self._record(valid, Tracking(name, position))
            imported, refused, stored = imported + recorded, refused + failed, position
            self.progress(f"imported {imported} of {len(ordered)} {read.object_type} unsubscribes")
        if read.watermark is not None and epoch_ms(read.watermark) > stored:
            self._record([], Tracking(name, epoch_ms(read.watermark)))
        return imported, refused

    def _record(self, changes: Sequence[Change], position: Tracking) -> tuple[int, int]:
        """(recorded, refused by the domain); retried when an ingest changed a person meanwhile."""
        refused = 0
        pending = list(changes)
        for attempt in range(RECORD_ATTEMPTS):
            try:
                batch = self.store.record(pending, position)
                return batch.recorded, refused
            except ChangesFailed as failed:
                for index, error in sorted(failed.failures.items(), reverse=True):
                    log.warning("a pulled change was refused by the domain: %s", error)
                    del pending[index]
                    refused += 1
            except IntegrityError:
                if attempt == RECORD_ATTEMPTS - 1:
                    raise
        return 0, refused

    def _observed(
        self, key: str, record_id: str, modstamp: datetime, target: OptOutTarget
    ) -> Accepted:
        object_type = RecordType.CONTACT if record_id.startswith("003") else RecordType.LEAD
        return Accepted(
            key, record_id, str(object_type), target.on(object_type), record_id, None, modstamp
        )

    def _record_outcomes(self, outcomes: Sequence[Outcome], what: str) -> None:
        for start in range(0, len(outcomes), OUTCOME_CHUNK):
            record_outcomes(self.store, outcomes[start : start + OUTCOME_CHUNK], None)
            self.progress(f"{what}: {min(start + OUTCOME_CHUNK, len(outcomes))} of {len(outcomes)}")

    def _record_pass(self, report: PassReport) -> None:
        recorded = NightlyPass(
            slot=report.slot,
            started_at=report.started_at,
            finished_at=report.finished_at,
            outcome=report.outcome,
            error=report.error,
            read=report.read,
            imported=report.imported,
            pushed=report.pushed,
            accepted=report.accepted,
            failed=report.failed,
            pending_link=report.pending_link,
            conflicts=[msgspec.structs.asdict(c) for c in report.conflicts],
            api_calls=report.api_calls,
            log_position=report.log_position,
        )
        self.store.save_with_position([cast(Person, recorded)], None)

    # --- the plan --------------------------------------------------------------------------
    def _plan_of(self, prepared: _Prepared) -> PassPlan:
        owed = prepared.to_push()
        bulk = len(owed) >= self.config.nightly_bulk_from
        return PassPlan(
            read=sum(len(read.records) for read in prepared.reads),
            full_reads=[str(read.object_type) for read in prepared.reads if read.full],
            to_import=len(prepared.plan.changes),
            already_known=prepared.plan.known,
            conflicts=[
                ConflictView(record_id=c.record_id, person_key=c.person_key)
                for c in prepared.plan.conflicts
            ],
            to_push=len(owed),
            push_by="nothing" if not owed else "bulk" if bulk else "collections",
            pending_link=prepared.pending_link,
            estimated_api_calls=estimate_calls(prepared.reads, owed, bulk),
        )
