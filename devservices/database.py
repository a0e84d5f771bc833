"""A local PostgreSQL server from Debian's packages: its own cluster, 127.0.0.1 only, trust auth.

The cluster lives in `<state_dir>/postgres`. As root it runs as the `postgres` account (PostgreSQL
refuses root); when that account cannot reach the state dir (e.g. under /root, mode 700), the
cluster goes to /var/lib/postgresql/optout-sync/<digest of state dir> and `<state_dir>/postgres`
becomes a symlink to it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pwd
import shutil
import signal
import stat
import subprocess
import sys
import time
from functools import cache
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import msgspec
import psycopg
from psycopg import sql

from devservices.settings import ServiceSettings

from .process import (
    RunAs,
    ServiceError,
    ServicePaths,
    ServiceStatus,
    exclusive,
    live_process,
    port_answers,
    service_paths,
    start_detached,
    stop,
    wait_until_ready,
)

NAME = "postgres"
SUPERUSER = "postgres"
DATABASES = ("optout", "optout_test")
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0
# Where Debian's `postgres` account may always write; used when it cannot reach the state dir.
SYSTEM_HOME = Path("/var/lib/postgresql/optout-sync")
# sockaddr_un.sun_path holds 108 bytes; longer socket paths make the server refuse to start.
MAX_SOCKET_PATH = 100

log = logging.getLogger(__name__)


def paths(settings: ServiceSettings) -> ServicePaths:
    return service_paths(settings.state_dir, NAME)


def _binaries_dir() -> Path | None:
    on_path = shutil.which("pg_ctl")
    if on_path and (Path(on_path).resolve().parent / "initdb").exists():
        return Path(on_path).resolve().parent
    installed = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3])
    )
    return installed[-1].parent if installed else None


def _install() -> None:
    if os.geteuid() != 0:
        raise ServiceError("PostgreSQL is not installed; run: sudo apt-get install -y postgresql")
    print("PostgreSQL not found: installing it (apt-get install -y postgresql)...", file=sys.stderr)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in (["apt-get", "update"], ["apt-get", "install", "-y", "postgresql"]):
        result = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise ServiceError(
                f"{' '.join(argv)} failed:\n{result.stdout[-3000:]}{result.stderr[-3000:]}"
            )


@cache
def binaries() -> Path:
    """The directory holding initdb and postgres, installing Debian's package when missing."""
    found = _binaries_dir()
    if found is None:
        _install()
        found = _binaries_dir()
        if found is None:
            raise ServiceError("apt-get installed postgresql but initdb is still not found")
    return found


def server_version() -> str:
    """The installed server's version; asking never installs it (only `up` does)."""
    found = _binaries_dir()
    return _version_of(found) if found else "PostgreSQL (not installed; `up` installs it)"


@cache
def _version_of(bin_dir: Path) -> str:
    out = subprocess.run(
        [str(bin_dir / "postgres"), "--version"], capture_output=True, text=True, check=True
    ).stdout
    return out.strip().removeprefix("postgres ").replace("(PostgreSQL)", "PostgreSQL").strip()


def _run_as() -> RunAs | None:
    """The account the server runs as: `postgres` when we are root, else ourselves."""
    if os.geteuid() != 0:
        return None
    try:
        account = pwd.getpwnam(SUPERUSER)
    except KeyError:
        raise ServiceError("running as root but there is no `postgres` account to run as") from None
    return RunAs(user=account.pw_name, uid=account.pw_uid, gid=account.pw_gid)


def _reachable_by(path: Path, run_as: RunAs) -> bool:
    """Whether `run_as` may traverse every directory above `path` (checked by mode bits)."""
    for parent in path.resolve().parents:
        if not parent.exists():
            continue  # created later by us with a umask that lets others traverse
        info = parent.stat()
        if info.st_uid == run_as.uid:
            allowed = info.st_mode & stat.S_IXUSR
        elif info.st_gid == run_as.gid:
            allowed = info.st_mode & stat.S_IXGRP
        else:
            allowed = info.st_mode & stat.S_IXOTH
        if not allowed:
            return False
    return True


def data_dir(settings: ServiceSettings) -> Path:
    """The cluster's directory: `<state_dir>/postgres`, or where that symlink points."""
    link = settings.state_dir / NAME
    run_as = _run_as()
    if link.is_symlink() or run_as is None or _reachable_by(link, run_as):
        return link.resolve() if link.is_symlink() else link
    digest = hashlib.sha256(str(settings.state_dir.resolve()).encode()).hexdigest()[:12]
    return SYSTEM_HOME / digest


def _prepare_data_dir(settings: ServiceSettings, run_as: RunAs | None) -> Path:
    target = data_dir(settings)
    link = settings.state_dir / NAME
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    target.mkdir(parents=True, exist_ok=True, mode=0o700)
    if target != link and not link.is_symlink():
        link.symlink_to(target, target_is_directory=True)
    if run_as is not None:
        for owned in (target, *([target.parent] if target.parent == SYSTEM_HOME else [])):
            os.chown(owned, run_as.uid, run_as.gid)
    return target


def _initdb(target: Path, run_as: RunAs | None) -> None:
    if (target / "PG_VERSION").exists():
        return
    result = subprocess.run(
        [
            str(binaries() / "initdb"),
            "-D",
            str(target),
            "-U",
            SUPERUSER,
            "--auth=trust",
            "--encoding=UTF8",
            "--no-locale",
            "--no-instructions",
        ],
        capture_output=True,
        text=True,
        check=False,
        cwd="/",
        user=run_as.uid if run_as else None,
        group=run_as.gid if run_as else None,
        extra_groups=[] if run_as else None,
    )
    if result.returncode != 0:
        raise ServiceError(f"initdb failed for {target}:\n{result.stdout}{result.stderr}")


def url(settings: ServiceSettings, database: str = "optout") -> str:
    return f"postgresql://{SUPERUSER}@127.0.0.1:{settings.postgres_port}/{database}"


def answers(address: str) -> bool:
    """True when a PostgreSQL server at `address` (a URL) accepts a connection."""
    try:
        with psycopg.connect(address, connect_timeout=3):
            return True
    except psycopg.OperationalError:
        return False


def create_database(server_url: str, name: str) -> str:
    """Create database `name` (if absent) on the server of `server_url`; returns its URL."""
    with psycopg.connect(server_url, autocommit=True) as connection:
        exists = connection.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (name,)
        ).fetchone()
        if exists is None:
            connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return urlunsplit(urlsplit(server_url)._replace(path=f"/{name}"))


def drop_database(server_url: str, name: str) -> None:
    """Drop database `name` on the server of `server_url`, disconnecting whoever still uses it."""
    with psycopg.connect(server_url, autocommit=True) as connection:
        connection.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def status(settings: ServiceSettings) -> ServiceStatus:
    service = paths(settings)
    state, record = live_process(service.pid)
    return ServiceStatus(
        name=NAME,
        state=state,
        pid=record.pid if record and state == "running" else None,
        port=settings.postgres_port,
        endpoint=url(settings),
        log_path=str(service.log),
        version=server_version(),
    )


def up(settings: ServiceSettings) -> ServiceStatus:
    """Start the server unless it is already running; returns its status (`started` says which)."""
    service = paths(settings)
    with exclusive(service):
        current = status(settings)
        if current.state == "running":
            return current
        if port_answers(settings.postgres_port):
            raise ServiceError(
                f"port {settings.postgres_port} on 127.0.0.1 is taken by a process that is not our "
                "PostgreSQL; stop it or choose another OPTOUT_POSTGRES_PORT"
            )
        began = time.monotonic()
        binaries()  # installs Debian's package when missing, before the account lookup
        run_as = _run_as()
        target = _prepare_data_dir(settings, run_as)
        _initdb(target, run_as)
        # TCP is what clients use; the socket is a convenience for psql, dropped if its path is too long.
        socket_path = f"{target}/.s.PGSQL.{settings.postgres_port}"
        socket_dir = str(target) if len(socket_path) < MAX_SOCKET_PATH else ""
        child = start_detached(
            [
                str(binaries() / "postgres"),
                "-D",
                str(target),
                "-p",
                str(settings.postgres_port),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                f"unix_socket_directories={socket_dir}",
                "-c",
                "logging_collector=off",
            ],
            paths=service,
            cwd=target,
            run_as=run_as,
        )
        admin_url = url(settings, "postgres")
        wait_until_ready(
            lambda: answers(admin_url),
            child=child,
            paths=service,
            what=f"PostgreSQL on 127.0.0.1:{settings.postgres_port}",
            timeout_s=START_TIMEOUT_S,
        )
        for database in DATABASES:
            create_database(admin_url, database)
        return msgspec.structs.replace(
            status(settings), started=True, start_seconds=round(time.monotonic() - began, 1)
        )


def down(settings: ServiceSettings) -> int | None:
    """Stop the server `up` started (SIGINT: PostgreSQL's fast, clean shutdown)."""
    service = paths(settings)
    with exclusive(service):
        return stop(service, stop_signal=signal.SIGINT, timeout_s=STOP_TIMEOUT_S)
