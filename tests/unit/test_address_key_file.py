"""The address key generated into the state directory: processes that start at the same moment
all read the one key the first of them wrote, never a half-written file."""

from __future__ import annotations

import multiprocessing
import stat
from pathlib import Path
from typing import Any

from adapters.event_store import ADDRESS_KEY_FILE, address_keys
from adapters.settings import load

STARTING_AT_ONCE = 8


def _key_of(state_dir: str, barrier: Any, keys: Any) -> None:
    settings = load({"OPTOUT_STATE_DIR": state_dir})
    barrier.wait()  # all at once, on a state directory without a key
    keys.put(address_keys(settings).key_of("ann@example.com"))


def test_processes_starting_at_once_share_one_whole_key(tmp_path: Path) -> None:
    context = multiprocessing.get_context("fork")
    for round_ in range(5):
        state_dir = tmp_path / f"state-{round_}"
        barrier, keys = context.Barrier(STARTING_AT_ONCE), context.Queue()
        starting = [
            context.Process(target=_key_of, args=(str(state_dir), barrier, keys))
            for _ in range(STARTING_AT_ONCE)
        ]
        for process in starting:
            process.start()
        got = [keys.get(timeout=60) for _ in starting]  # a process that raised puts nothing
        for process in starting:
            process.join(timeout=60)
        assert all(process.exitcode == 0 for process in starting)
        assert len(set(got)) == 1, "every process hashes addresses with the same key"
        key_file = state_dir / ADDRESS_KEY_FILE
        assert len(key_file.read_text()) == 64
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        assert sorted(p.name for p in state_dir.iterdir()) == [ADDRESS_KEY_FILE]  # none aside
