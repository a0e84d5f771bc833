"""Why an inbound message was refused: a stable machine code and one readable sentence.

The reason travels to logs and dead-letter headers, so it names the field (`$.person.email`)
and never repeats the offending value: a value may be an email address, i.e. personal data.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import msgspec

# Every code `decode` can give; the dead-letter topic and the documentation list exactly these.
CODES: frozenset[str] = frozenset(
    {
        "not_bytes",
        "null_value",
        "empty_value",
        "oversized",
        "invalid_utf8",
        "invalid_json",
        "too_deep",
        "not_an_object",
        "missing_schema_version",
        "unknown_schema_version",
        "missing_field",
        "wrong_type",
        "unknown_type",
        "unknown_value",
        "too_long",
        "empty_field",
        "invalid_characters",
        "invalid_uuid",
        "out_of_range",
        "naive_timestamp",
        "bad_timestamp",
        "future_timestamp",
        "invalid_value",
        "no_person_identity",
        "invalid_email",
        "invalid_salesforce_id",
        "removal_without_reason",
        "removal_without_named_actor",
        "link_without_salesforce_id",
    }
)

# Shared with the wire-form check in adapters.inbound, so both refusals read alike.
NOT_A_UUID = "not a UUID (8-4-4-4-12 hex digits, with hyphens)"
NOT_A_TIMESTAMP = "not an RFC 3339 timestamp (2024-05-01T09:30:00+02:00)"

_AT = re.compile(r"^(?P<text>.*?) - at `(?P<path>[^`]*)`$", re.DOTALL)
_MISSING = re.compile(r"^Object missing required field `(?P<field>[^`]*)`$")
_EXPECTED = re.compile(r"^Expected `(?P<want>[^`]*)`, got `(?P<got>[^`]*)`$")
_LONGER = re.compile(r"^Expected `str` of length <= (?P<n>\d+)$")
_SHORTER = re.compile(r"^Expected `str` of length >= (?P<n>\d+)$")
_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")


class ContractError(ValueError):
    """An inbound message that breaks the contract; `code` is stable, `reason` is for people."""

    def __init__(self, code: str, reason: str) -> None:
        assert code in CODES, code
        super().__init__(f"{code}: {reason}")
        self.code = code
        self.reason = reason


def from_decode_error(error: msgspec.DecodeError) -> ContractError:
    """msgspec's JSON syntax errors name a byte offset, never the content."""
    return ContractError("invalid_json", f"$: the value is not valid JSON ({error})")


def from_validation_error(
    error: msgspec.ValidationError,
    choices: Mapping[str, tuple[object, ...]],
    patterns: Mapping[str, tuple[str, str]],
) -> ContractError:
    """Turn msgspec's message (which names the path) into a code and a value-free sentence.

    `choices` are the closed sets by path; `patterns` the code and sentence of a pattern's refusal.
    """
    message = str(error)
    match = _AT.match(message)
    text, path = (match["text"], match["path"]) if match else (message, "$")

    if missing := _MISSING.match(text):
        field = missing["field"]
        if path == "$" and field == "schema_version":
            return ContractError(
                "missing_schema_version", "$.schema_version: every message must carry its version"
            )
        return ContractError("missing_field", f"{path}.{field}: this required field is missing")
    if expected := _EXPECTED.match(text):
        if path == "$" and expected["want"] == "object":
            return ContractError(
                "not_an_object", f"$: a change message is a JSON object, got {expected['got']}"
            )
        return ContractError(
            "wrong_type", f"{path}: expected {expected['want']}, got {expected['got']}"
        )
    if text.startswith("Invalid enum value"):
        allowed = ", ".join(str(choice) for choice in choices.get(path, ()))
        code = "unknown_type" if path == "$.type" else "unknown_value"
        return ContractError(code, f"{path}: not one of the allowed values ({allowed})")
    if longer := _LONGER.match(text):
        return ContractError("too_long", f"{path}: longer than {longer['n']} characters")
    if _SHORTER.match(text):
        return ContractError("empty_field", f"{path}: must not be empty when present")
    if text.startswith("Expected `str` matching regex") and path in patterns:
        code, sentence = patterns[path]
        return ContractError(code, f"{path}: {sentence}")
    if text in ("Integer value out of range", "Number out of range"):
        return ContractError("out_of_range", f"{path}: the number is out of range")
    if text == "Invalid UUID":
        return ContractError("invalid_uuid", f"{path}: {NOT_A_UUID}")
    if text == "Expected `datetime` with a timezone component":
        return ContractError(
            "naive_timestamp", f"{path}: an RFC 3339 timestamp needs an offset (Z or +hh:mm)"
        )
    if text == "Invalid RFC3339 encoded datetime":
        return ContractError("bad_timestamp", f"{path}: {NOT_A_TIMESTAMP}")
    # Unforeseen msgspec wording: keep it, but drop any quoted value it might echo.
    return ContractError("invalid_value", f"{path}: {_QUOTED.sub('<value>', text)}")
