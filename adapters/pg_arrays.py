"""Arrays sent to PostgreSQL as one text literal instead of a Python list.

psycopg dumps a list parameter element by element in pure Python (its ListDumper: about a sixth
of an ingest's CPU on PostgreSQL, measured with py-spy); the same array written as PostgreSQL's
array literal is one string, parsed by the server. `%s::uuid[]` and `%s::text[]` take it as they
take the list (tests/integration/test_pg_copy.py compares the two over random text).
"""

from __future__ import annotations

from collections.abc import Iterable
from uuid import UUID


def uuid_array(ids: Iterable[UUID]) -> str:
    """`{hex,hex,...}`: PostgreSQL reads a uuid's 32 hex digits without hyphens."""
    return "{" + ",".join([i.hex for i in ids]) + "}"


def text_array(values: Iterable[str]) -> str:
    """Each element double-quoted, with its backslashes and double quotes escaped (so commas,
    braces, spaces and the word NULL stay text). PostgreSQL text holds no NUL: neither does this."""
    return "{" + ",".join([_quoted(value) for value in values]) + "}"


def _quoted(value: str) -> str:
    if "\\" in value or '"' in value:
        value = value.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + value + '"'
