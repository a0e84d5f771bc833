"""Benchmark of the Salesforce sandbox through the unmodified simple-salesforce client.

Runs `optout-sync sandbox` in its own process (so client and server do not share a GIL), then
measures, over one kept-alive HTTPS session:
  - baseline: sequential GET /limits round trips per second (the cheapest authenticated call);
  - sequential single-record updates per second (sf.Contact.update, PATCH, 204);
  - one Bulk API 2.0 update job of 100,000 Contacts, from job creation to JobComplete.

Usage: python bench/sandbox.py [--updates 3000] [--bulk-rows 100000] [--json]
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Any

import requests
from simple_salesforce import Salesforce

TARGET_UPDATES_PER_S = 1000
TARGET_BULK_S = 60.0


def start_server(contacts: int, state_dir: str) -> tuple[subprocess.Popen[str], dict[str, str]]:
    command = ["optout-sync", "sandbox", "--port", "0", "--json", "--generate", str(contacts)]
    env = {**os.environ, "OPTOUT_STATE_DIR": state_dir}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env)
    assert process.stdout is not None
    line = process.stdout.readline()  # the server prints its settings once it is listening
    if not line:
        raise SystemExit("the sandbox did not start")
    return process, json.loads(line)


def client(settings: dict[str, str]) -> Salesforce:
    session = requests.Session()
    session.verify = settings["SF_CA_BUNDLE"]
    session.trust_env = False  # else REQUESTS_CA_BUNDLE overrides verify
    return Salesforce(
        username=settings["SF_USERNAME"],
        password=settings["SF_PASSWORD"],
        security_token=settings["SF_SECURITY_TOKEN"],
        domain=settings["SF_LOGIN_DOMAIN"],
        session=session,
    )


def rate(count: int, action: Any) -> float:
    started = time.perf_counter()
    for i in range(count):
        action(i)
    return count / (time.perf_counter() - started)


def all_contact_ids(sf: Salesforce) -> list[str]:
    pages = sf.bulk2.Contact.query("SELECT Id FROM Contact", wait=0.2)
    return [row["Id"] for page in pages for row in csv.DictReader(io.StringIO(str(page)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--updates", type=int, default=3000)
    parser.add_argument("--bulk-rows", type=int, default=100_000)
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="optout-bench-") as state_dir:
        process, settings = start_server(max(args.bulk_rows, 1000), state_dir)
        try:
            sf = client(settings)
            ids = all_contact_ids(sf)
            sf.limits()  # warm the connection
            limits_rate = rate(args.updates, lambda _: sf.limits())
            contact = sf.Contact
            update_rate = rate(
                args.updates,
                lambda i: contact.update(ids[i % len(ids)], {"HasOptedOutOfEmail": True}),
            )
            rows = [
                {"Id": record_id, "HasOptedOutOfEmail": "true"}
                for record_id in ids[: args.bulk_rows]
            ]
            started = time.perf_counter()
            (job,) = sf.bulk2.Contact.update(records=rows, wait=1)
            bulk_seconds = time.perf_counter() - started
            info = sf.bulk2.Contact._client.get_job(job["job_id"], False)
        finally:
            process.terminate()
            process.wait(timeout=60)

    figures = {
        "limits_round_trips_per_s": round(limits_rate, 1),
        "single_updates_per_s": round(update_rate, 1),
        "updates_vs_limits_ratio": round(update_rate / limits_rate, 3),
        "updates_vs_target_ratio": round(update_rate / TARGET_UPDATES_PER_S, 3),
        "bulk_rows": job["numberRecordsProcessed"],
        "bulk_failed": job["numberRecordsFailed"],
        "bulk_job_seconds_client": round(bulk_seconds, 2),
        "bulk_job_processing_ms_server": info["totalProcessingTime"],
    }
    if args.json:
        print(json.dumps(figures))
    else:
        print(f"baseline GET /limits      {limits_rate:8.1f} round trips/s")
        print(
            f"single-record updates     {update_rate:8.1f} /s  "
            f"(x{figures['updates_vs_limits_ratio']} of baseline, "
            f"x{figures['updates_vs_target_ratio']} of the {TARGET_UPDATES_PER_S}/s target)"
        )
        print(
            f"bulk 2.0 update job       {job['numberRecordsProcessed']} rows "
            f"({job['numberRecordsFailed']} failed) in {bulk_seconds:.1f} s "
            f"(server processing {info['totalProcessingTime']} ms; target < {TARGET_BULK_S:.0f} s)"
        )
    ok = (
        update_rate >= TARGET_UPDATES_PER_S
        and bulk_seconds < TARGET_BULK_S
        and job["numberRecordsFailed"] == 0
    )
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
