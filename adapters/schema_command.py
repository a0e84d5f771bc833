"""How a contract's JSON Schema is published: one text form, and one small command that prints it
(`python -m adapters.inbound schema`, `python -m adapters.outbound schema`)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any


def published(schema: dict[str, Any]) -> str:
    """The schema as the file under docs/schema/ holds it (a test compares the two)."""
    return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"


def run(prog: str, description: str, schema_text: Callable[[], str], argv: list[str] | None) -> int:
    parser = argparse.ArgumentParser(prog=prog, description=description)
    verbs = parser.add_subparsers(dest="verb", required=True)
    verbs.add_parser("schema", help="print the JSON Schema of the current version")
    parser.parse_args(argv)
    sys.stdout.write(schema_text())
    return 0
