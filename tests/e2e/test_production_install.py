"""A production install holds the product, not the fake Salesforce org or its web stack: `pip
install .` with no extras, in a throwaway virtual environment, as the Docker image does it."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.slow]


def test_pip_install_without_extras_runs_the_engine_and_leaves_the_sandbox_out(
    tmp_path: Path,
) -> None:
    source = tmp_path / "source"  # a copy: building in the checkout would leave build/ behind
    shutil.copytree(
        REPO,
        source,
        ignore=shutil.ignore_patterns(
            ".git", ".venv", "build", "*.egg-info", "__pycache__", ".*cache"
        ),
    )
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    installed = subprocess.run(
        [str(venv / "bin" / "pip"), "install", "--quiet", str(source)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert installed.returncode == 0, installed.stderr[-3000:]
    engine = venv / "bin" / "optout-sync"
    ingest = subprocess.run(
        [str(engine), "ingest", "--help"], capture_output=True, text=True, timeout=120
    )
    assert ingest.returncode == 0 and "exactly once" in ingest.stdout, ingest.stderr
    starlette = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import starlette"], capture_output=True, timeout=60
    )
    assert starlette.returncode != 0, "the sandbox's web stack is not in a production install"
    refused = subprocess.run([str(engine), "sandbox"], capture_output=True, text=True, timeout=120)
    assert refused.returncode == 1 and "development parts" in refused.stderr, refused.stderr
    assert "Traceback" not in refused.stderr


def test_the_image_copies_only_the_products_rooms() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    copied = set(re.findall(r"^COPY (\w+) \1$", dockerfile, re.MULTILINE))
    assert copied == {"domain", "projections", "adapters", "consumers"}
    assert re.search(r"pip install --no-cache-dir \.( |$)", dockerfile, re.MULTILINE)
