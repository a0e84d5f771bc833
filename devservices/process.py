"""What the local services share: pid files that know their process, detached starts, log tails,
waiting on a condition with a deadline, and a lease that keeps a service up while someone uses it."""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal

import msgspec

State = Literal["running", "stopped", "stale"]
_ERROR_MARK = re.compile(r"\b(ERROR|FATAL|PANIC)\b|Exception: ")


class ServiceError(RuntimeError):
    """A local service could not be provisioned, started or stopped; the message says why."""


class ServiceStatus(msgspec.Struct, kw_only=True):
    """One local service as `status` (and `up`/`down`) report it."""

    name: str
    # stale: a pid file left behind by a process that is gone.
    state: State
    pid: int | None
    port: int
    endpoint: str
    log_path: str
    version: str
    # True only in the answer of the `up` call that started the process.
    started: bool = False
    # Seconds `up` spent starting it (0 when it was already running).
    start_seconds: float = 0.0


class RecordedProcess(msgspec.Struct, frozen=True):
    """A pid file's content: the pid plus its kernel start time, so a reused pid is not mistaken."""

    pid: int
    start_time: int
    command: str


@dataclass(frozen=True)
class ServicePaths:
    log: Path
    pid: Path
    lock: Path
    lease: Path


def service_paths(state_dir: Path, name: str) -> ServicePaths:
    directory = state_dir / "services"
    return ServicePaths(
        log=directory / f"{name}.log",
        pid=directory / f"{name}.pid",
        lock=directory / f"{name}.lock",
        lease=directory / f"{name}.lease",
    )


# Popen objects of the services this process started, kept so they are reaped, not leaked.
_children: dict[int, subprocess.Popen[bytes]] = {}


def process_start_time(pid: int) -> int | None:
    """The kernel start time of a live process, or None when it is gone (or a zombie)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name may hold spaces and parentheses; the fields that follow it do not.
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def _reap(pid: int) -> None:
    child = _children.get(pid)
    if child is not None:
        if child.poll() is not None:
            del _children[pid]
        return
    # A service started by this process through another path (pytest session) still needs reaping.
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def is_alive(record: RecordedProcess) -> bool:
    _reap(record.pid)
    return process_start_time(record.pid) == record.start_time


def read_pid_file(path: Path) -> RecordedProcess | None:
    try:
        return msgspec.json.decode(path.read_bytes(), type=RecordedProcess)
    except (FileNotFoundError, msgspec.DecodeError, msgspec.ValidationError):
        return None


def live_process(path: Path) -> tuple[State, RecordedProcess | None]:
    """Whether the process a pid file names is still the one that wrote it."""
    record = read_pid_file(path)
    if record is None:
        return "stopped", None
    if is_alive(record):
        return "running", record
    return "stale", record


def port_answers(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(0.5)
        return probe.connect_ex((host, port)) == 0


def log_tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return f"(no log at {path})"
    all_lines = text.splitlines()
    tail = "\n".join(all_lines[-lines:])
    # A stack trace can push the line that names the cause out of the tail; show the first errors.
    errors = [line for line in all_lines[:-lines] if _ERROR_MARK.search(line)][:5]
    first = "--- first errors ---\n" + "\n".join(errors) + "\n" if errors else ""
    return f"{first}--- last {lines} lines of {path} ---\n{tail}"


def _rotate(log: Path) -> None:
    """Keep one previous run's log beside the current one, so each start's log is its own."""
    if log.exists():
        log.replace(log.with_name(log.name + ".1"))


@dataclass(frozen=True)
class RunAs:
    """An OS account to run a service as (PostgreSQL refuses to run as root)."""

    user: str
    uid: int
    gid: int


def start_detached(
    argv: Sequence[str],
    *,
    paths: ServicePaths,
    cwd: Path,
    env: Mapping[str, str] | None = None,
    run_as: RunAs | None = None,
) -> subprocess.Popen[bytes]:
    """Start a service in its own session (it outlives the CLI) with stdout+stderr in its log."""
    paths.log.parent.mkdir(parents=True, exist_ok=True)
    _rotate(paths.log)
    with paths.log.open("ab") as log:
        log.write(f"=== {time.strftime('%Y-%m-%d %H:%M:%S')} starting: {' '.join(argv)}\n".encode())
        log.flush()
        child = subprocess.Popen(
            list(argv),
            cwd=cwd,
            env=dict(env) if env is not None else None,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
            user=run_as.uid if run_as else None,
            group=run_as.gid if run_as else None,
            extra_groups=[] if run_as else None,
        )
    _children[child.pid] = child
    start_time = process_start_time(child.pid)
    record = RecordedProcess(pid=child.pid, start_time=start_time or -1, command=argv[0])
    paths.pid.write_bytes(msgspec.json.encode(record))
    return child


def wait_until_ready(
    ready: Callable[[], bool],
    *,
    child: subprocess.Popen[bytes],
    paths: ServicePaths,
    what: str,
    timeout_s: float,
) -> None:
    """Poll `ready` until it holds; a start that dies or times out is cleaned up and reported."""
    deadline = time.monotonic() + timeout_s
    while True:
        code = child.poll()
        if code is not None:
            paths.pid.unlink(missing_ok=True)
            raise ServiceError(
                f"{what} exited with code {code} while starting\n{log_tail(paths.log)}"
            )
        if ready():
            return
        if time.monotonic() > deadline:
            _kill_group(child.pid)
            child.wait(timeout=30)
            paths.pid.unlink(missing_ok=True)
            raise ServiceError(
                f"{what} was not ready after {timeout_s:.0f}s; stopped it\n{log_tail(paths.log)}"
            )
        time.sleep(0.25)


def _kill_group(pid: int) -> None:
    # Every service runs in its own session, so its process group is exactly its processes.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if os.getpgid(pid) == pid:
            os.killpg(pid, signal.SIGKILL)
        else:
            os.kill(pid, signal.SIGKILL)


def _wait_gone(record: RecordedProcess, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while is_alive(record):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def stop(paths: ServicePaths, *, stop_signal: signal.Signals, timeout_s: float) -> int | None:
    """Stop the process the pid file names, if it is still ours; returns its pid if it was running.

    `stop_signal` asks for a clean shutdown; SIGKILL to its process group follows after `timeout_s`.
    """
    state, record = live_process(paths.pid)
    if state != "running" or record is None:
        paths.pid.unlink(missing_ok=True)
        return None
    with contextlib.suppress(ProcessLookupError):
        os.kill(record.pid, stop_signal)
    if not _wait_gone(record, timeout_s):
        _kill_group(record.pid)
        if not _wait_gone(record, 30):
            raise ServiceError(f"pid {record.pid} survived SIGKILL\n{log_tail(paths.log)}")
    paths.pid.unlink(missing_ok=True)
    return record.pid


@contextlib.contextmanager
def exclusive(paths: ServicePaths) -> Iterator[None]:
    """One `up`/`down` of a service at a time, across processes (two test sessions, two shells)."""
    paths.lock.parent.mkdir(parents=True, exist_ok=True)
    with paths.lock.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class Lease:
    """A shared claim on a running service; its starter stops it only when no one else holds one.

    The kernel drops a dead holder's claim, so a crashed test session never pins a service.
    """

    def __init__(self, paths: ServicePaths) -> None:
        paths.lease.parent.mkdir(parents=True, exist_ok=True)
        self._handle: IO[str] | None = paths.lease.open("a")
        fcntl.flock(self._handle, fcntl.LOCK_SH)

    def release_is_last(self) -> bool:
        """Drop the claim; True when no other holder remains (and none can join until close)."""
        assert self._handle is not None
        fcntl.flock(self._handle, fcntl.LOCK_UN)
        try:
            fcntl.flock(self._handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.close()
            return False
        return True

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None
