"""Does a published JSON Schema say what its consumer does? For every schema the project publishes.

A producer checks its messages with its own validator; the consumer then decides. This module
gives the tests the producer's side: an independent validator (python-jsonschema, Draft 2020-12,
every `format` asserted, every `pattern` run as the ECMA-262 regex it is, not as Python's `re`),
the documented list of rules a schema cannot state, and the comparison of both verdicts over a
corpus. A new schema needs its corpus, its consumer as a function, and its document's table.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import regress
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError
from jsonschema.protocols import Validator

UNSTATED_HEADING = "Rules the schema cannot state"
_SURROGATE = re.compile("[\ud800-\udfff]")


@cache
def ecma(pattern: str, flags: str = "u") -> regress.Regex:
    """The pattern as an ECMA-262 engine reads it (JSON Schema 2020-12 asks for the `u` flag)."""
    return regress.Regex(pattern, flags)


def ecma_search(pattern: str, text: str, flags: str = "u") -> bool:
    # regress takes Rust strings: a lone surrogate (a code point to ECMA) stands in as U+FFFD.
    return ecma(pattern, flags).find(_SURROGATE.sub("\ufffd", text)) is not None


def _ecma_pattern(
    validator: Validator, pattern: str, instance: Any, schema: Mapping[str, Any]
) -> Iterator[ValidationError]:
    if validator.is_type(instance, "string") and not ecma_search(pattern, instance):
        yield ValidationError(f"does not match the ECMA-262 pattern {pattern!r}")


_EcmaValidator = jsonschema.validators.extend(Draft202012Validator, {"pattern": _ecma_pattern})


def keyword_values(schema: Any, keyword: str) -> Iterator[str]:
    """Every string value of `keyword` anywhere in the schema (`pattern`, `format`, ...)."""
    if isinstance(schema, dict):
        for key, value in schema.items():
            if key == keyword and isinstance(value, str):
                yield value
            yield from keyword_values(value, keyword)
    elif isinstance(schema, list):
        for item in schema:
            yield from keyword_values(item, keyword)


def strict_validator(schema: dict[str, Any]) -> Validator:
    """A Draft 2020-12 validator that asserts formats and reads patterns as ECMA-262.

    Fails when a format the schema uses has no checker installed: jsonschema would silently
    treat it as an annotation (the checkers come with `jsonschema[format-nongpl]`).
    """
    Draft202012Validator.check_schema(schema)
    checker = Draft202012Validator.FORMAT_CHECKER
    unchecked = set(keyword_values(schema, "format")) - set(checker.checkers)
    assert not unchecked, f"no format checker installed for {sorted(unchecked)}"
    for pattern in keyword_values(schema, "pattern"):
        ecma(pattern)  # raises unless it is a valid ECMA-262 (u-mode) regex
    validator: Validator = _EcmaValidator(schema, format_checker=checker)
    return validator


def unstated_rules(document: Path, heading: str = UNSTATED_HEADING) -> dict[str, str | None]:
    """The document's table of rules a schema cannot state: rule id -> dead-letter code.

    Rows read `| `rule` | `code` | ...` (or `none` as the code, for a rule that refuses nothing).
    """
    text = document.read_text(encoding="utf-8")
    assert f"\n## {heading}\n" in text, f"{document.name} has no '## {heading}' section"
    section = text.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `(\w+)` \| (?:`(\w+)`|none) \|", section, re.MULTILINE)
    assert rows, f"the '{heading}' section of {document.name} has no table rows"
    return {rule: code or None for rule, code in rows}


@dataclass(frozen=True)
class Case:
    """One message of a corpus: the JSON document a producer validates, as the consumer gets it.

    `unstated` names the documented rule the message breaks (the schema accepts it, the consumer
    gives that rule's code); `expect` pins both verdicts (True: accepted) where it matters.
    """

    name: str
    message: Any
    unstated: str | None = None
    expect: bool | None = None
    wire: bytes | None = None  # the bytes, when not json.dumps(message)

    def value(self) -> bytes:
        return self.wire if self.wire is not None else json.dumps(self.message).encode()


def disagreements(
    cases: Iterable[Case],
    validator: Validator,
    consume: Callable[[bytes], str | None],
    rules: Mapping[str, str | None],
) -> list[str]:
    """Where the validator and the consumer (None: accepted, else the code) differ unexpectedly.

    A case without a rule must get the same verdict from both; a case under a documented rule
    must be accepted by the schema and given exactly that rule's code by the consumer.
    """
    found = []
    for case in cases:
        by_schema = validator.is_valid(case.message)
        code = consume(case.value())
        verdicts = f"schema {'accepts' if by_schema else 'refuses'}, consumer {code or 'accepts'}"
        if case.unstated is not None:
            if case.unstated not in rules:
                found.append(f"{case.name}: rule {case.unstated!r} is not in the documented list")
            elif not by_schema or code != rules[case.unstated]:
                wanted = rules[case.unstated] or "accepts"
                found.append(f"{case.name}: {verdicts}; the documented rule says consumer {wanted}")
        elif by_schema != (code is None):
            found.append(f"{case.name}: {verdicts}")
        elif case.expect is not None and by_schema != case.expect:
            found.append(f"{case.name}: both {'refuse' if case.expect else 'accept'} it")
    return found


def strings_in(value: Any) -> Iterator[str]:
    """Every string (keys and values) in a JSON document, however deep."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            yield item
        elif isinstance(item, dict):
            pending += [*item.keys(), *item.values()]
        elif isinstance(item, list):
            pending += item


# Where Python's `re` and ECMA-262 are known to part: line ends, Unicode spaces, astral planes.
EDGE_TEXTS = (
    "", " ", "\n", "\r", "\r\n", "\t", "\x00", "\x0b", "\x1c", "\x7f", "\x85", "\xa0", "\u1680",
    "\u2000", "\u200b", "\u2028", "\u2029", "\u3000", "\ufeff", "é", "İ", "\u212a", "😀", "\ud800",
)  # fmt: skip


def pattern_disagreements(schema: dict[str, Any], texts: Iterable[str]) -> list[str]:
    """Texts that Python's `re` (the consumer's engine) and ECMA-262 judge differently.

    Each text is also tried with an edge text before and after it, and in ECMA's u and non-u modes.
    """
    probes = set(EDGE_TEXTS)
    for text in texts:
        probes |= (
            {text} | {text + edge for edge in EDGE_TEXTS} | {edge + text for edge in EDGE_TEXTS}
        )
    found = []
    for pattern in sorted(set(keyword_values(schema, "pattern"))):
        for probe in sorted(probes):
            python = re.search(pattern, probe) is not None
            for flags in ("u", ""):
                if ecma_search(pattern, probe, flags) != python:
                    found.append(f"{pattern!r} on {probe!r} (flags {flags!r}): Python {python}")
    return found
