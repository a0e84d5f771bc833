"""Benchmark of the nightly pass: API calls spent against the naive count, wall time, rows/s.

A sandbox org (its own process) of --records Contacts and as many Leads (default 100,000 each;
every 25th Lead converted), a SQLite store of its own, and --drift (default 1%) of the records
drifting each way before each pass: that many records checked in Salesforce by someone else, and
that many persons unsubscribed here, linked to records not checked there (converted Leads
included, as they come). Then:

  1. the first pass (Bulk API 2.0 queries; the push by Bulk update jobs);
  2. the same drift again, then an incremental pass (reads since the watermark);
  3. a pass with nothing to do.

Real passes are a day apart, so a pass re-reads only what changed within the overlap window
(OPTOUT_NIGHTLY_OVERLAP, 10 minutes by default) before the previous one's watermark, plus the
records the previous pass itself wrote. The bench runs its passes seconds apart, so it shrinks
the window (--overlap, 5 s) and waits past it between passes; with the default window and no
wait, every record of the run is re-read (8,000 rows, 5 calls for the pass with nothing to do).

Each prints the API calls it spent (counted by the pass's own meter, logins excluded) beside the
naive count — one call per record in the org, as a poller reading and writing record by record
would — with its wall time and rows (read + pushed) per second. Targets: the incremental pass
<= 20 calls, the pass with nothing to do <= 3. Every record here and there is checked at the end:
the org's checked records and the store's opted-out persons agree.

Usage: python bench/nightly.py [--records 100000] [--drift 0.01] [--json]
       (./run bench nightly --records 5000 for a quick run)
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import requests
from simple_salesforce import Salesforce

from adapters import event_store
from adapters.inbound import Actor, ChangeV1, PersonRef
from adapters.settings import Settings, load
from consumers import bootstrap
from consumers.nightly import PassReport
from consumers.slice_writer import to_change

INCREMENTAL_TARGET = 20
NO_OP_TARGET = 3


def start_org(records: int, state_dir: str) -> tuple[subprocess.Popen[str], dict[str, str]]:
    command = ["optout-sync", "sandbox", "--port", "0", "--json", "--generate", str(records)]
    env = {**os.environ, "OPTOUT_STATE_DIR": state_dir}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env)
    assert process.stdout is not None
    line = process.stdout.readline()  # printed once the socket listens
    if not line:
        raise SystemExit("the sandbox did not start")
    return process, json.loads(line)


def client(org: dict[str, str]) -> Salesforce:
    session = requests.Session()
    session.verify = org["SALESFORCE_CA_BUNDLE"]
    session.trust_env = False
    return Salesforce(
        username=org["SALESFORCE_USERNAME"],
        password=org["SALESFORCE_PASSWORD"],
        security_token=org["SALESFORCE_SECURITY_TOKEN"],
        domain=org["SALESFORCE_DOMAIN"],
        session=session,
    )


def read_all(sf: Salesforce, sobject: str) -> list[dict[str, str]]:
    bulk2: Any = sf.bulk2
    pages = getattr(bulk2, sobject).query(
        f"SELECT Id, HasOptedOutOfEmail FROM {sobject}",
        wait=0.2,
    )
    return [row for page in pages for row in csv.DictReader(io.StringIO(str(page)))]


class Drift:
    """Picks records that are in agreement (unchecked there, unknown here) and breaks it."""

    def __init__(self, sf: Salesforce, config: Settings, seed: int = 13) -> None:
        self.sf, self.config = sf, config
        self.random = random.Random(seed)
        self.free = {
            sobject: [r["Id"] for r in read_all(sf, sobject) if r["HasOptedOutOfEmail"] == "false"]
            for sobject in ("Contact", "Lead")
        }
        for ids in self.free.values():
            self.random.shuffle(ids)
        self.serial = 0

    def take(self, sobject: str, count: int) -> list[str]:
        taken, self.free[sobject] = self.free[sobject][:count], self.free[sobject][count:]
        return taken

    def there(self, per_object: int) -> None:
        """Someone checks the box in Salesforce."""
        bulk2: Any = self.sf.bulk2
        for sobject in ("Contact", "Lead"):
            rows = [{"Id": i, "HasOptedOutOfEmail": "true"} for i in self.take(sobject, per_object)]
            for result in getattr(bulk2, sobject).update(records=rows, wait=0.2):
                # Converted Leads refuse the write: they stay as they are.
                assert result["numberRecordsProcessed"] == len(rows), result

    def here(self, per_object: int) -> None:
        """Unsubscribes collected here, linked to records not checked there."""
        store = bootstrap.open_store(self.config, writer=True)
        keys = event_store.address_keys(self.config)
        at = datetime.now(UTC) - timedelta(minutes=5)
        try:
            changes = []
            for sobject in ("Contact", "Lead"):
                for record_id in self.take(sobject, per_object):
                    self.serial += 1
                    person = PersonRef(person_id=f"bench-{self.serial}", salesforce_id=record_id)
                    change = ChangeV1(
                        event_id=uuid.uuid4(),
                        schema_version=1,
                        type="unsubscribed",
                        person=person,
                        source="sales",
                        actor=Actor(kind="recipient"),
                        channel="email_link",
                        reason=None,
                        occurred_at=at,
                    )
                    changes.append(to_change(change, keys))
            for start in range(0, len(changes), 1000):
                store.record(changes[start : start + 1000])
        finally:
            store.close()


def run_pass(config: Settings) -> tuple[PassReport, float]:
    runner = bootstrap.nightly(config)
    try:
        started = time.perf_counter()
        report = runner.run()
        return report, time.perf_counter() - started
    finally:
        runner.store.close()


def agreement(sf: Salesforce, config: Settings) -> tuple[int, int]:
    """(checked records in the org whose person here is not opted out, owed pushes left)."""
    store = bootstrap.open_store(config)
    try:
        from domain.nightly import Persons

        persons = Persons.read(store)
        disagree = 0
        for sobject in ("Contact", "Lead"):
            for row in read_all(sf, sobject):
                if row["HasOptedOutOfEmail"] != "true":
                    continue
                keys = persons.by_record.get(row["Id"], [])
                if not any(persons.opted_out[k] for k in keys):
                    disagree += 1
        owed = [o for o in persons.owed() if o.record_id is not None]
        return disagree, len(owed)
    finally:
        store.close()


def line(name: str, report: PassReport, wall: float, naive: int) -> dict[str, Any]:
    rows = report.read + report.pushed
    figures = {
        "pass": name,
        "api_calls": report.api_calls,
        "naive_calls": naive,
        "wall_s": round(wall, 2),
        "rows": rows,
        "rows_per_s": round(rows / wall) if wall else 0,
        "read": report.read,
        "imported": report.imported,
        "pushed": report.pushed,
        "accepted": report.accepted,
        "failed": report.failed,
        "conflicts": len(report.conflicts),
    }
    print(
        f"{name:<12} {report.api_calls:>4} API calls (naive: {naive:,}) "
        f"{wall:7.2f} s {figures['rows_per_s']:>8,} rows/s   read {report.read:,}, imported "
        f"{report.imported:,}, pushed {report.pushed:,} ({report.accepted:,} accepted, "
        f"{report.failed:,} failed)",
        file=sys.stderr,
    )
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=100_000, help="Contacts, and as many Leads")
    parser.add_argument("--drift", type=float, default=0.01, help="share drifting each way")
    parser.add_argument(
        "--overlap",
        type=float,
        default=5.0,
        help="OPTOUT_NIGHTLY_OVERLAP for the run, in seconds; the bench waits a second more "
        "between passes, as a day passes between real ones (default 5)",
    )
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    per_object = max(1, int(args.records * args.drift))
    state_dir = tempfile.mkdtemp(prefix="bench-nightly-")
    process, org = start_org(args.records, state_dir)
    try:
        env = {
            **org,
            "OPTOUT_STATE_DIR": state_dir,
            "OPTOUT_DATABASE_URL": f"sqlite:///{Path(state_dir) / 'events.sqlite'}",
            "OPTOUT_NIGHTLY_SYNC": "on",
            "OPTOUT_NIGHTLY_OVERLAP": str(args.overlap),
        }
        config = load(env)
        bootstrap.create_tables(config.database_url)
        sf = client(org)
        naive = 2 * args.records
        print(
            f"org: {args.records:,} Contacts + {args.records:,} Leads; drift each way before "
            f"each pass: {per_object:,} of each object checked there, {per_object:,} of each "
            "unsubscribed here",
            file=sys.stderr,
        )
        drift = Drift(sf, config)
        results = []
        drift.there(per_object)
        drift.here(per_object)
        results.append(line("first", *run_pass(config), naive))
        time.sleep(args.overlap + 1)  # the day between two passes, past the overlap window
        drift.there(per_object)
        drift.here(per_object)
        results.append(line("incremental", *run_pass(config), naive))
        time.sleep(args.overlap + 1)
        results.append(line("nothing", *run_pass(config), naive))
        disagree, owed = agreement(sf, config)
        print(
            f"after: {disagree} checked records not opted out here, {owed} pushes owed",
            file=sys.stderr,
        )
        verdict = (
            results[1]["api_calls"] <= INCREMENTAL_TARGET
            and results[2]["api_calls"] <= NO_OP_TARGET
            and disagree == 0
        )
        if args.json:
            print(
                json.dumps({"passes": results, "disagree": disagree, "owed": owed, "ok": verdict})
            )
        print(
            f"targets: incremental <= {INCREMENTAL_TARGET} calls, nothing to do <= "
            f"{NO_OP_TARGET}: {'met' if verdict else 'MISSED'}",
            file=sys.stderr,
        )
        return 0 if verdict else 1
    finally:
        process.terminate()
        process.wait(30)


if __name__ == "__main__":
    sys.exit(main())
