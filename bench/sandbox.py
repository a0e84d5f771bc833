"""Benchmark of the Salesforce sandbox through the unmodified simple-salesforce client.

Runs `optout-sync sandbox` in its own process (so client and server do not share a GIL), then
measures:
  - baseline: sequential GET /limits round trips per second over one kept-alive HTTPS session
    (the cheapest authenticated call);
  - single-client updates per second: sequential sf.Contact.update (PATCH, 204) from one client
    over one kept-alive session;
  - multi-client updates per second: --clients processes (spawned), each with its own
    simple-salesforce client and kept-alive session, each updating its own disjoint slice of the
    contacts, released together by a barrier, for --duration seconds (default 5; all stop together)
    or a fixed --client-updates count; the figure is the sum of their updates divided by the wall
    time from the first client's start to the last client's finish;
  - one Bulk API 2.0 update job of 100,000 Contacts, from job creation to JobComplete.

Every update sets HasOptedOutOfEmail on a contact not updated before in the run, so after each
update phase `SELECT COUNT() FROM Contact WHERE HasOptedOutOfEmail = true` must have grown by exactly
the number of updates the clients counted; the run fails otherwise.

The pass/fail verdict for the >= 1,000 updates/s target uses the multi-client figure: one client
process is CPU-bound in requests + TLS (~0.7 ms a call, against ~0.3 ms in the server), so a single
client measures the client rather than the sandbox.

Usage: python bench/sandbox.py [--updates 3000] [--clients 2] [--duration 5 | --client-updates N]
                               [--bulk-rows 100000] [--json]
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import multiprocessing
import os
import queue
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.synchronize import Barrier
from typing import Any, cast

import requests
from simple_salesforce import Salesforce, SFType

TARGET_UPDATES_PER_S = 1000
TARGET_BULK_S = 60.0
UPDATE = {"HasOptedOutOfEmail": True}
OPTED_OUT_COUNT = "SELECT COUNT() FROM Contact WHERE HasOptedOutOfEmail = true"
# Contacts each client gets in --duration mode, per second of duration (well above any client's rate).
IDS_PER_CLIENT_SECOND = 2500


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
    session.verify = settings["SALESFORCE_CA_BUNDLE"]
    session.trust_env = False  # else REQUESTS_CA_BUNDLE overrides verify
    return Salesforce(
        username=settings["SALESFORCE_USERNAME"],
        password=settings["SALESFORCE_PASSWORD"],
        security_token=settings["SALESFORCE_SECURITY_TOKEN"],
        domain=settings["SALESFORCE_DOMAIN"],
        session=session,
    )


def rate(count: int, action: Callable[[int], Any]) -> float:
    started = time.perf_counter()
    for i in range(count):
        action(i)
    return count / (time.perf_counter() - started)


def bulk2_contacts(sf: Salesforce) -> Any:
    """sf.bulk2.Contact, typed Any: simple-salesforce's __getattr__ types it as a union of handlers."""
    bulk2: Any = sf.bulk2
    return bulk2.Contact


def all_contact_ids(sf: Salesforce) -> list[str]:
    pages = bulk2_contacts(sf).query("SELECT Id FROM Contact", wait=0.2)
    return [row["Id"] for page in pages for row in csv.DictReader(io.StringIO(str(page)))]


def opted_out(sf: Salesforce) -> int:
    return int(sf.query(OPTED_OUT_COUNT)["totalSize"])


def update_all(sf: Salesforce, ids: list[str], deadline: float = math.inf) -> int:
    """Update each contact once (stopping at `deadline`, time.monotonic()); returns the count."""
    contact = cast(SFType, sf.Contact)  # what Salesforce.__getattr__ returns for an sObject name
    done = 0
    for record_id in ids:
        status = contact.update(record_id, UPDATE)  # raises on any error status
        if status != 204:
            raise RuntimeError(f"update of {record_id} returned HTTP {status}, not 204")
        done += 1
        if time.monotonic() >= deadline:
            break
    return done


@dataclass(frozen=True)
class ClientRun:
    """What one client process reports: its updates and when (time.monotonic()) it ran them."""

    updates: int
    started: float
    finished: float
    error: str | None = None


def client_process(
    settings: dict[str, str],
    ids: list[str],
    duration: float | None,
    barrier: Barrier,
    results: multiprocessing.Queue[ClientRun],
) -> None:
    """One benchmark client: log in, warm its connection, wait for the others, then update."""
    try:
        sf = client(settings)
        sf.limits()  # login done and the TLS session established before the clock starts
        barrier.wait(timeout=120)
        # CLOCK_MONOTONIC is system-wide on Linux, so clients' timestamps compare across processes.
        started = time.monotonic()
        deadline = math.inf if duration is None else started + duration
        done = update_all(sf, ids, deadline)
        results.put(ClientRun(done, started, time.monotonic()))
    except Exception as error:
        barrier.abort()  # release the others rather than leave them waiting
        results.put(ClientRun(0, 0.0, 0.0, f"{type(error).__name__}: {error}"))


def multi_client(
    settings: dict[str, str], slices: list[list[str]], duration: float | None
) -> list[ClientRun]:
    """Run one client process per slice of ids, all released by one barrier; their reports."""
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(len(slices))
    results: multiprocessing.Queue[ClientRun] = context.Queue()
    processes = [
        context.Process(
            target=client_process,
            args=(settings, ids, duration, barrier, results),
            name=f"bench-client-{n}",
            daemon=True,
        )
        for n, ids in enumerate(slices)
    ]
    for process in processes:
        process.start()
    runs: list[ClientRun] = []
    while len(runs) < len(processes):
        try:
            runs.append(results.get(timeout=1))
        except queue.Empty:
            if not any(p.is_alive() for p in processes) and results.empty():
                raise SystemExit("a benchmark client exited without reporting") from None
    for process in processes:
        process.join(timeout=30)
    errors = [run.error for run in runs if run.error is not None]
    if errors:
        raise SystemExit(f"benchmark client failed: {errors[0]}")
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--updates", type=int, default=3000, help="single-client updates (and GET /limits calls)"
    )
    parser.add_argument(
        "--clients", type=int, default=2, help="client processes in the multi-client run"
    )
    length = parser.add_mutually_exclusive_group()
    length.add_argument(
        "--duration",
        type=float,
        default=5.0,
        help="seconds each multi-run client updates for, all stopping together (default 5)",
    )
    length.add_argument(
        "--client-updates",
        type=int,
        help="a fixed count of updates per client instead of --duration (the window then "
        "includes the tail where the slower client runs alone)",
    )
    parser.add_argument("--bulk-rows", type=int, default=100_000)
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    args = parser.parse_args()
    if args.clients < 1 or args.updates < 1 or (args.client_updates or 1) < 1:
        parser.error("--clients, --updates and --client-updates must be at least 1")
    if args.duration <= 0:
        parser.error("--duration must be positive")
    duration = None if args.client_updates is not None else args.duration
    per_client = (
        args.client_updates if duration is None else math.ceil(duration * IDS_PER_CLIENT_SECOND)
    )
    # Every update goes to a contact of its own, so the opted-out count verifies each one landed.
    contacts = max(args.bulk_rows, args.updates + args.clients * per_client, 1000)

    with tempfile.TemporaryDirectory(prefix="optout-bench-") as state_dir:
        process, settings = start_server(contacts, state_dir)
        try:
            sf = client(settings)
            ids = all_contact_ids(sf)
            sf.limits()  # warm the connection
            limits_rate = rate(args.updates, lambda _: sf.limits())

            before = opted_out(sf)
            started = time.perf_counter()
            single_count = update_all(sf, ids[: args.updates])
            single_rate = single_count / (time.perf_counter() - started)
            after_single = opted_out(sf)

            rest = ids[args.updates :]
            slices = [rest[n * per_client : (n + 1) * per_client] for n in range(args.clients)]
            runs = multi_client(settings, slices, duration)
            after_multi = opted_out(sf)

            rows = [
                {"Id": record_id, "HasOptedOutOfEmail": "true"}
                for record_id in ids[: args.bulk_rows]
            ]
            bulk = bulk2_contacts(sf)
            started = time.perf_counter()
            (job,) = bulk.update(records=rows, wait=1)
            bulk_seconds = time.perf_counter() - started
            info = bulk._client.get_job(job["job_id"], False)
        finally:
            process.terminate()
            process.wait(timeout=60)

    multi_count = sum(run.updates for run in runs)
    window = max(run.finished for run in runs) - min(run.started for run in runs)
    multi_rate = multi_count / window
    landed_single = after_single - before
    landed_multi = after_multi - after_single
    verified = landed_single == single_count and landed_multi == multi_count
    figures = {
        "limits_round_trips_per_s": round(limits_rate, 1),
        "single_updates_per_s": round(single_rate, 1),
        "single_vs_limits_ratio": round(single_rate / limits_rate, 3),
        "single_vs_target_ratio": round(single_rate / TARGET_UPDATES_PER_S, 3),
        "clients": args.clients,
        "multi_updates_per_s": round(multi_rate, 1),
        "multi_vs_limits_ratio": round(multi_rate / limits_rate, 3),
        "multi_vs_target_ratio": round(multi_rate / TARGET_UPDATES_PER_S, 3),
        "multi_updates": multi_count,
        "multi_mode": "fixed count" if duration is None else f"{duration:g} s",
        "multi_window_s": round(window, 3),
        "multi_per_client_per_s": [
            round(run.updates / (run.finished - run.started), 1) for run in runs
        ],
        "updates_verified": verified,
        "bulk_rows": job["numberRecordsProcessed"],
        "bulk_failed": job["numberRecordsFailed"],
        "bulk_job_seconds_client": round(bulk_seconds, 2),
        "bulk_job_processing_ms_server": info["totalProcessingTime"],
    }
    ok = (
        verified
        and multi_rate >= TARGET_UPDATES_PER_S
        and bulk_seconds < TARGET_BULK_S
        and job["numberRecordsFailed"] == 0
    )
    if args.json:
        print(json.dumps({**figures, "pass": ok}))
    else:
        per_client_rates = ", ".join(f"{r:.1f}" for r in figures["multi_per_client_per_s"])
        lines = [
            ("baseline GET /limits", f"{limits_rate:8.1f} round trips/s (1 client)"),
            (
                "updates, 1 client",
                f"{single_rate:8.1f} /s  (x{figures['single_vs_limits_ratio']} of baseline, "
                f"x{figures['single_vs_target_ratio']} of the {TARGET_UPDATES_PER_S}/s target)",
            ),
            (
                f"updates, {args.clients} clients (aggregate)",
                f"{multi_rate:8.1f} /s  (x{figures['multi_vs_limits_ratio']} of baseline, "
                f"x{figures['multi_vs_target_ratio']} of the {TARGET_UPDATES_PER_S}/s target; "
                f"{multi_count} updates in {window:.2f} s; per client {per_client_rates} /s)",
            ),
            (
                "updates verified",
                f"{'yes' if verified else 'NO'}: opted-out contacts grew by {landed_single} "
                f"(expected {single_count}), then {landed_multi} (expected {multi_count})",
            ),
            (
                "bulk 2.0 update job",
                f"{job['numberRecordsProcessed']} rows ({job['numberRecordsFailed']} failed) in "
                f"{bulk_seconds:.1f} s (server processing {info['totalProcessingTime']} ms; "
                f"target < {TARGET_BULK_S:.0f} s)",
            ),
            (
                "verdict",
                f"{'PASS' if ok else 'FAIL'} (>= {TARGET_UPDATES_PER_S} updates/s judged on the "
                f"{args.clients}-client aggregate; bulk < {TARGET_BULK_S:.0f} s; all updates verified)",
            ),
        ]
        for label, text in lines:
            print(f"{label:<31} {text}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
