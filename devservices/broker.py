"""A local Apache Kafka broker: single node, KRaft (broker and controller in one JVM), 127.0.0.1 only.

The jars come from Maven Central through `kafka-pom.xml` and are cached in
`<cache_dir>/kafka-<version>`; data, config and cluster id live in `<state_dir>/kafka`.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import logging
import os
import re
import resource
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
import xml.etree.ElementTree as ET
from functools import cache
from pathlib import Path

import msgspec
from kafka import KafkaAdminClient
from kafka.errors import KafkaConfigurationError, KafkaError

from devservices.settings import ServiceSettings

from .process import (
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

NAME = "kafka"
POM = Path(__file__).with_name("kafka-pom.xml")
LOG_CONFIG = Path(__file__).with_name("kafka-log4j2.yaml")
START_TIMEOUT_S = 180.0
# Controlled shutdown of a one-node KRaft cluster takes seconds; leave room on a busy machine.
STOP_TIMEOUT_S = 90.0
# Sized for a 2-core machine shared with other work: serial GC, few JIT threads. The heap holds
# every partition's metadata: the test suite makes topics by the hundred (about 5,000 partitions
# a run, kept between runs), and 512 MiB ran out at some 14,000 (OutOfMemoryError, the broker gone).
JVM_OPTIONS = (
    "-Xms256m",
    "-Xmx2g",
    "-XX:+UseSerialGC",
    "-XX:CICompilerCount=2",
    "-XX:+ExitOnOutOfMemoryError",
    "-Djava.awt.headless=true",
)

# Every partition keeps its active segment open (a descriptor) and maps two index files. The JVM
# raises its open-file limit to the hard one by itself, and a broker whose partitions reach it dies
# of "Too many open files"; room is kept for sockets, jars and the metadata log.
FILE_HEADROOM = 1024
_PARTITION_DIR = re.compile(r".+-\d+")
MAX_MAP_COUNT = Path("/proc/sys/vm/max_map_count")

log = logging.getLogger(__name__)


@cache
def kafka_version() -> str:
    """The Kafka version the pom pins (the one source of it)."""
    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    node = ET.parse(POM).getroot().find("m:properties/m:kafka.version", ns)  # noqa: S314 (our file)
    if node is None or not node.text:
        raise ServiceError(f"{POM} does not set <kafka.version>")
    return node.text.strip()


def controller_port(settings: ServiceSettings) -> int:
    """The KRaft controller listens on the port after the broker's."""
    return settings.kafka_port + 1


def bootstrap(settings: ServiceSettings) -> str:
    return f"127.0.0.1:{settings.kafka_port}"


def paths(settings: ServiceSettings) -> ServicePaths:
    return service_paths(settings.state_dir, NAME)


def jars_dir(settings: ServiceSettings) -> Path:
    return settings.cache_dir / f"kafka-{kafka_version()}"


def _pom_digest() -> str:
    return hashlib.sha256(POM.read_bytes()).hexdigest()


def ensure_jars(settings: ServiceSettings) -> Path:
    """The broker's jars, resolved from Maven Central on first use and when the pom changes."""
    settings.cache_dir.mkdir(parents=True, exist_ok=True)
    # Instances with different state dirs share the cache: one download at a time.
    with (settings.cache_dir / f"kafka-{kafka_version()}.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _resolve_jars(settings)


def _resolve_jars(settings: ServiceSettings) -> Path:
    target = jars_dir(settings)
    marker = target / ".pom-sha256"
    if marker.exists() and marker.read_text() == _pom_digest():
        return target
    mvn = shutil.which("mvn")
    if mvn is None:
        raise ServiceError(
            "Maven (mvn) is not on PATH; it resolves the Kafka jars (apt-get install maven)"
        )
    log.warning(
        "resolving Apache Kafka %s jars from Maven Central into %s", kafka_version(), target
    )
    staging = Path(tempfile.mkdtemp(prefix=".kafka-", dir=settings.cache_dir))
    try:
        # mvn works on a copy so it never writes into the source tree.
        shutil.copy(POM, staging / "pom.xml")
        result = subprocess.run(
            [
                mvn,
                "-q",
                "-B",
                "dependency:copy-dependencies",
                "-DincludeScope=runtime",
                f"-DoutputDirectory={staging / 'libs'}",
            ],
            cwd=staging,
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise ServiceError(
                f"mvn could not resolve the Kafka jars (exit {result.returncode}):\n"
                f"{result.stdout[-4000:]}{result.stderr[-4000:]}"
            )
        (staging / ".pom-sha256").write_text(_pom_digest())
        shutil.rmtree(target, ignore_errors=True)
        staging.replace(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _java() -> str:
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "java").exists():
        return str(Path(java_home) / "bin" / "java")
    java = shutil.which("java")
    if java is None:
        raise ServiceError(
            "java is not on PATH (Kafka 4 needs Java 17+; apt-get install openjdk-17-jre)"
        )
    return java


def _server_properties(settings: ServiceSettings, data_dir: Path) -> str:
    port, cport = settings.kafka_port, controller_port(settings)
    lines = {
        "process.roles": "broker,controller",
        "node.id": "1",
        # A static voter set: the quorum survives a change of port (a --standalone one would not).
        "controller.quorum.voters": f"1@127.0.0.1:{cport}",
        "listeners": f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{cport}",
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "log.dirs": str(data_dir),
        # A deleted topic's files (and their descriptors) go after a second, not a minute: the
        # test suite deletes its topics as each test ends.
        "log.segment.delete.delay.ms": "1000",
        "num.partitions": "4",
        "auto.create.topics.enable": "true",
        "offsets.topic.replication.factor": "1",
        # Fewer internal partitions make the first consumer group and transaction join fast.
        "offsets.topic.num.partitions": "8",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "transaction.state.log.num.partitions": "4",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "group.initial.rebalance.delay.ms": "0",
        # Few threads: two shared cores.
        "num.network.threads": "2",
        "num.io.threads": "2",
        "background.threads": "2",
        "num.recovery.threads.per.data.dir": "1",
        "num.replica.fetchers": "1",
        "log.cleaner.threads": "1",
        "group.coordinator.threads": "1",
        "share.coordinator.threads": "1",
    }
    header = "# Written by optout-sync at every `services up`; edits are overwritten.\n"
    return header + "".join(f"{key}={value}\n" for key, value in lines.items())


def _cluster_id(kafka_dir: Path) -> str:
    """The id the storage is formatted with (only asked for while it is not formatted yet)."""
    id_file = kafka_dir / "cluster-id"
    held = id_file.read_text().strip() if id_file.exists() else ""
    if not held or held.startswith("-"):  # one with a leading '-' never formatted: replaced
        held = new_cluster_id()
        id_file.write_text(held)
    return held


def new_cluster_id() -> str:
    """Kafka's own format, a random UUID in URL-safe base64 without padding, and its own rule
    (`Uuid.randomUuid`): never a leading '-', which the storage tool's command line would take
    for an option (one start in 64 failed with "--cluster-id: expected one argument")."""
    while True:
        made = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not made.startswith("-"):
            return made


def _format_storage(
    java: str, classpath: str, config: Path, kafka_dir: Path, data_dir: Path
) -> None:
    if (data_dir / "meta.properties").exists():
        return
    result = subprocess.run(
        [
            java,
            "-Xmx256m",
            "-XX:+UseSerialGC",
            f"-Dlog4j2.configurationFile={LOG_CONFIG}",
            "-cp",
            classpath,
            "kafka.tools.StorageTool",
            "format",
            "-t",
            _cluster_id(kafka_dir),
            "-c",
            str(config),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise ServiceError(f"formatting Kafka storage failed:\n{result.stdout}{result.stderr}")


def partitions_on_disk(data_dir: Path) -> int:
    """The partitions whose logs the broker would open at start (its data dir's `topic-N` dirs)."""
    if not data_dir.is_dir():
        return 0
    return sum(
        1 for entry in data_dir.iterdir() if entry.is_dir() and _PARTITION_DIR.fullmatch(entry.name)
    )


def partition_capacity() -> int:
    """How many partitions this machine's limits let one broker hold, with room to spare."""
    _, hard_files = resource.getrlimit(resource.RLIMIT_NOFILE)
    files = hard_files if hard_files != resource.RLIM_INFINITY else 1 << 20
    maps = int(MAX_MAP_COUNT.read_text()) if MAX_MAP_COUNT.exists() else 1 << 20
    return min(files, maps // 2) - FILE_HEADROOM


def _check_file_limits(data_dir: Path) -> None:
    """Refuses a start that would die of "Too many open files" once its partitions are loaded."""
    held, capacity = partitions_on_disk(data_dir), partition_capacity()
    if held > capacity:
        raise ServiceError(
            f"the broker's data dir {data_dir} holds {held} partitions, and each keeps a file "
            f"open and two maps; this machine's limits (ulimit -Hn, vm.max_map_count) leave room "
            f"for {capacity}. Raise the limits, or, if the topics are test leftovers, remove "
            f"{data_dir.parent} while the broker is stopped (it is formatted afresh at start)"
        )


def broker_answers(bootstrap_servers: str) -> bool:
    """True when a broker at `bootstrap_servers` lists its topics (our readiness test)."""
    try:
        admin = KafkaAdminClient(
            bootstrap_servers=bootstrap_servers,
            client_id="optout-sync-readiness",
            request_timeout_ms=5000,
            bootstrap_timeout_ms=5000,
        )
    except KafkaConfigurationError:
        raise
    except (KafkaError, OSError):
        return False
    try:
        admin.list_topics()
        return True
    except (KafkaError, OSError):
        return False
    finally:
        admin.close()


def status(settings: ServiceSettings) -> ServiceStatus:
    service = paths(settings)
    state, record = live_process(service.pid)
    return ServiceStatus(
        name=NAME,
        state=state,
        pid=record.pid if record and state == "running" else None,
        port=settings.kafka_port,
        endpoint=bootstrap(settings),
        log_path=str(service.log),
        version=f"Apache Kafka {kafka_version()}",
    )


def up(settings: ServiceSettings) -> ServiceStatus:
    """Start the broker unless it is already running; returns its status (`started` says which)."""
    service = paths(settings)
    with exclusive(service):
        current = status(settings)
        if current.state == "running":
            return current
        _check_ports_free(settings, current)
        began = time.monotonic()
        kafka_dir = settings.state_dir / NAME
        data_dir = kafka_dir / "data"
        _check_file_limits(data_dir)
        jars = ensure_jars(settings)
        java, classpath = _java(), str(jars / "libs" / "*")
        data_dir.mkdir(parents=True, exist_ok=True)
        config = kafka_dir / "server.properties"
        config.write_text(_server_properties(settings, data_dir))
        _format_storage(java, classpath, config, kafka_dir, data_dir)
        child = start_detached(
            [
                java,
                *JVM_OPTIONS,
                f"-Dlog4j2.configurationFile={LOG_CONFIG}",
                f"-Dkafka.logs.dir={service.log.parent}",
                "-cp",
                classpath,
                "kafka.Kafka",
                str(config),
            ],
            paths=service,
            cwd=kafka_dir,
        )
        address = bootstrap(settings)
        wait_until_ready(
            lambda: port_answers(settings.kafka_port) and broker_answers(address),
            child=child,
            paths=service,
            what=f"Kafka broker on {address}",
            timeout_s=START_TIMEOUT_S,
        )
        return msgspec.structs.replace(
            status(settings), started=True, start_seconds=round(time.monotonic() - began, 1)
        )


def _check_ports_free(settings: ServiceSettings, current: ServiceStatus) -> None:
    """Refuses to start when something already listens on the broker's or controller's port."""
    for port in (settings.kafka_port, controller_port(settings)):
        if not port_answers(port):
            continue
        if port == settings.kafka_port and broker_answers(bootstrap(settings)):
            # A broker this state dir did not start (or whose pid file is gone): not ours to run.
            raise ServiceError(
                f"a Kafka broker already answers on {bootstrap(settings)}, but "
                f"{paths(settings).pid} does not name it (pid file {current.state}: started "
                "with another OPTOUT_STATE_DIR, or its pid file was removed). Use it with "
                f"KAFKA_BOOTSTRAP_SERVERS={bootstrap(settings)}, stop it, or choose another "
                "OPTOUT_KAFKA_PORT"
            )
        raise ServiceError(
            f"port {port} on 127.0.0.1 is taken by a process that is not our broker; "
            "stop it or choose another OPTOUT_KAFKA_PORT (the controller uses the next port)"
        )


def down(settings: ServiceSettings) -> int | None:
    """Stop the broker `up` started (SIGTERM: a controlled shutdown); returns its pid if it ran."""
    service = paths(settings)
    with exclusive(service):
        return stop(service, stop_signal=signal.SIGTERM, timeout_s=STOP_TIMEOUT_S)
