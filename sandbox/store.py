"""Records of the sandbox org in memory: ids, field validation, modstamps, converted-lead rule."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sandbox.config import API_VERSION
from sandbox.errors import ApiError, RecordError
from sandbox.ids import InvalidSalesforceId, to_18
from sandbox.schema import FieldSpec, SObjectSchema, build_schemas

Record = dict[str, Any]
_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def now() -> datetime:
    """Salesforce keeps milliseconds."""
    stamp = datetime.now(UTC)
    return stamp.replace(microsecond=stamp.microsecond // 1000 * 1000)


def format_datetime(value: datetime) -> str:
    """REST form: 2026-01-01T00:00:00.000+0000."""
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}+0000"


def parse_datetime(raw: str) -> datetime:
    """Accepts the REST form, RFC 3339 with Z or offset; raises ValueError otherwise."""
    text = raw.strip()
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    elif len(text) > 5 and text[-5] in "+-" and text[-3] != ":":
        text = text[:-2] + ":" + text[-2:]
    parsed = datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        raise ValueError("a dateTime needs an offset")
    return parsed.astimezone(UTC)


def make_id(prefix: str, serial: int) -> str:
    """A well-formed 18-character id: key prefix, pod '8d', reserved '0', 9 base-62 digits."""
    digits = ""
    for _ in range(9):
        serial, rest = divmod(serial, 62)
        digits = _BASE62[rest] + digits
    return to_18(f"{prefix}8d0{digits}")


def coerce(spec: FieldSpec, value: Any) -> Any:
    """A JSON or CSV value as the field's type; raises RecordError like Salesforce's parser."""
    if value is None:
        if not spec.nillable:
            raise RecordError(
                "REQUIRED_FIELD_MISSING", f"Required fields are missing: [{spec.name}]", [spec.name]
            )
        return None
    if spec.type == "boolean":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0"):
            return value.lower() in ("true", "1")
        raise RecordError(
            "INVALID_TYPE_ON_FIELD_IN_RECORD",
            f"{spec.label}: value not of required type: {value}",
            [spec.name],
        )
    if spec.type == "datetime":
        try:
            return parse_datetime(str(value))
        except ValueError:
            raise RecordError(
                "INVALID_TYPE_ON_FIELD_IN_RECORD",
                f"{spec.label}: value not of required type: {value}",
                [spec.name],
            ) from None
    if not isinstance(value, str):
        raise RecordError(
            "INVALID_TYPE_ON_FIELD_IN_RECORD",
            f"{spec.label}: value not of required type: {value}",
            [spec.name],
        )
    if spec.type == "email" and value and ("@" not in value or " " in value.strip()):
        raise RecordError(
            "INVALID_EMAIL_ADDRESS", f"Email: invalid email address: {value}", [spec.name]
        )
    return value


class RecordStore:
    """Contact and Lead records keyed by 18-character id; one lock for the server and test threads."""

    def __init__(self, marketo_field: str | None) -> None:
        self.schemas: dict[str, SObjectSchema] = build_schemas(marketo_field)
        self._by_lower = {name.lower(): schema for name, schema in self.schemas.items()}
        self._by_prefix = {schema.key_prefix: schema for schema in self.schemas.values()}
        self.records: dict[str, dict[str, Record]] = {name: {} for name in self.schemas}
        self.lock = threading.RLock()
        self._serial = 0
        # Every checkbox value ever written (record id, field, value): the oracle of "never false".
        self.checkbox_writes: list[tuple[str, str, bool]] = []

    def schema(self, sobject: str) -> SObjectSchema:
        schema = self._by_lower.get(sobject.lower())
        if schema is None:
            raise ApiError(404, "NOT_FOUND", "The requested resource does not exist")
        return schema

    def find_schema(self, sobject: str) -> SObjectSchema | None:
        return self._by_lower.get(sobject.lower())

    def locate(
        self, raw_id: str, sobject: str | None = None
    ) -> tuple[SObjectSchema, Record] | None:
        """The record with this 15- or 18-character id (optionally of this type), or None."""
        try:
            full = to_18(raw_id)
        except InvalidSalesforceId:
            return None
        schema = self._by_prefix.get(full[:3])
        if schema is None or (sobject is not None and schema.name.lower() != sobject.lower()):
            return None
        record = self.records[schema.name].get(full)
        return None if record is None else (schema, record)

    def validate(self, schema: SObjectSchema, changes: dict[str, Any]) -> dict[str, Any]:
        """Canonical field names for a write; unknown -> INVALID_FIELD, read-only -> 400 as Salesforce."""
        for name in changes:
            if schema.field(name) is None:
                raise ApiError(
                    400,
                    "INVALID_FIELD",
                    f"No such column '{name}' on sobject of type {schema.name}",
                    [name],
                )
        read_only = [
            schema.by_lower[n.lower()].name
            for n in changes
            if not schema.by_lower[n.lower()].updateable
        ]
        if read_only:
            raise ApiError(
                400,
                "INVALID_FIELD_FOR_INSERT_UPDATE",
                f"Unable to create/update fields: {', '.join(read_only)}. Please check the security "
                "settings of this field and verify that it is read/write for your profile or "
                "permission set.",
                read_only,
            )
        return {schema.by_lower[name.lower()].name: value for name, value in changes.items()}

    def prepare(
        self, schema: SObjectSchema, record: Record, changes: dict[str, Any]
    ) -> dict[str, Any]:
        """Typed values for an update of `record`; raises RecordError for a row-level refusal."""
        if record.get("IsConverted"):
            raise RecordError("CANNOT_UPDATE_CONVERTED_LEAD", "cannot reference converted lead")
        return {
            name: coerce(schema.by_lower[name.lower()], value) for name, value in changes.items()
        }

    def apply(self, record: Record, typed: dict[str, Any], stamp: datetime | None = None) -> None:
        """Write typed values; every write moves LastModifiedDate and SystemModstamp."""
        record.update(typed)
        self.checkbox_writes.extend(
            (record["Id"], name, value) for name, value in typed.items() if isinstance(value, bool)
        )
        if "FirstName" in typed or "LastName" in typed:
            record["Name"] = " ".join(
                p for p in (record.get("FirstName"), record.get("LastName")) if p
            )
        moment = stamp or now()
        record["LastModifiedDate"] = moment
        record["SystemModstamp"] = moment

    def insert(self, sobject: str, values: dict[str, Any]) -> Record:
        """A new record (seeding and admin use); an explicit Id is honoured when well formed."""
        schema = self.schema(sobject)
        with self.lock:
            raw_id = values.get("Id")
            if raw_id:
                record_id = to_18(str(raw_id))
                if record_id[:3] != schema.key_prefix:
                    raise ValueError(f"{record_id} is not a {schema.name} id")
            else:
                record_id = self._next_id(schema)
            stamp = now()
            record: Record = {spec.name: None for spec in schema.fields}
            record.update(
                Id=record_id, IsDeleted=False, HasOptedOutOfEmail=False, CreatedDate=stamp
            )
            if schema.name == "Lead":
                record.update(IsConverted=False, Company="Unknown", Status="Open - Not Contacted")
            for spec in schema.fields:
                if spec.type == "boolean" and record[spec.name] is None:
                    record[spec.name] = False
            for name, value in values.items():
                known = schema.field(name)
                if known is None or name == "Id":
                    continue
                record[known.name] = coerce(known, value)
                if known.name == "ConvertedContactId" and value:
                    record["ConvertedContactId"] = to_18(str(value))
            # A snapshot keeps its modstamps; a fresh record is stamped now.
            record["LastModifiedDate"] = record["LastModifiedDate"] or stamp
            record["SystemModstamp"] = record["SystemModstamp"] or stamp
            record["Name"] = " ".join(
                p for p in (record.get("FirstName"), record.get("LastName")) if p
            )
            self.records[schema.name][record_id] = record
            return record

    def _next_id(self, schema: SObjectSchema) -> str:
        # Skip ids already taken by a loaded snapshot or seed file.
        while True:
            self._serial += 1
            candidate = make_id(schema.key_prefix, self._serial)
            if candidate not in self.records[schema.name]:
                return candidate

    def render(
        self, schema: SObjectSchema, record: Record, fields: list[str] | None = None
    ) -> Record:
        """JSON shape of a record, attributes first, datetimes in Salesforce's REST format."""
        out: Record = {
            "attributes": {
                "type": schema.name,
                "url": f"/services/data/v{API_VERSION}/sobjects/{schema.name}/{record['Id']}",
            }
        }
        for name in fields or [spec.name for spec in schema.fields]:
            value = record.get(name)
            out[name] = format_datetime(value) if isinstance(value, datetime) else value
        return out

    def count(self) -> dict[str, int]:
        return {name: len(rows) for name, rows in self.records.items()}

    def save(self, path: Path) -> None:
        """Snapshot all records as JSON (the seed-file format)."""
        with self.lock:
            data = {
                name.lower() + "s": [
                    {
                        k: format_datetime(v) if isinstance(v, datetime) else v
                        for k, v in rec.items()
                    }
                    for rec in rows.values()
                ]
                for name, rows in self.records.items()
            }
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(data))
        tmp.replace(path)
