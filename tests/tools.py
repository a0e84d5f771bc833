"""Independent command-line clients the tests use as a user would (kcat for Kafka), installed from
Debian's packages when missing — or a loud failure, never a skip."""

from __future__ import annotations

import os
import shutil
import subprocess
from functools import cache


@cache
def kcat() -> str:
    """The path of kcat (librdkafka's command-line client)."""
    found = shutil.which("kcat")
    if found:
        return found
    if os.geteuid() != 0:
        raise RuntimeError("kcat is not installed; run: sudo apt-get install -y kcat")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in (["apt-get", "update"], ["apt-get", "install", "-y", "kcat"]):
        result = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed:\n{result.stderr[-3000:]}")
    found = shutil.which("kcat")
    if not found:
        raise RuntimeError("apt-get installed kcat but it is not on PATH")
    return found


def kcat_read(bootstrap: str, topic: str) -> list[tuple[str, str]]:
    """(key, value) of every committed record of a topic, from its start to its current end."""
    result = subprocess.run(
        [kcat(), "-b", bootstrap, "-C", "-t", topic, "-e", "-q", "-o", "beginning",
         "-X", "isolation.level=read_committed", "-f", "%k\\t%s\\n"],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    return [tuple(line.split("\t", 1)) for line in result.stdout.splitlines() if line]  # type: ignore[misc]
