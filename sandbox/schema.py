"""The sandbox org's schema: Contact and Lead fields, as describe reports them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sandbox.config import API_VERSION


@dataclass(frozen=True)
class FieldSpec:
    name: str
    label: str
    type: str  # Salesforce describe type: id, string, email, boolean, datetime, reference, picklist
    updateable: bool
    nillable: bool = True
    custom: bool = False

    def describe(self) -> dict[str, Any]:
        soap_type = {
            "id": "tns:ID",
            "reference": "tns:ID",
            "boolean": "xsd:boolean",
            "datetime": "xsd:dateTime",
        }.get(self.type, "xsd:string")
        return {
            "name": self.name,
            "label": self.label,
            "type": self.type,
            "soapType": soap_type,
            "updateable": self.updateable,
            "createable": self.updateable,
            "nillable": self.nillable,
            "custom": self.custom,
            "filterable": True,
            "sortable": True,
            "defaultedOnCreate": self.type == "boolean",
            "length": _LENGTHS.get(self.type, 0),
        }


_LENGTHS = {"string": 80, "email": 80, "picklist": 255, "id": 18, "reference": 18}


def _common() -> list[FieldSpec]:
    return [
        FieldSpec("Id", "Contact ID", "id", updateable=False, nillable=False),
        FieldSpec("IsDeleted", "Deleted", "boolean", updateable=False, nillable=False),
        FieldSpec("FirstName", "First Name", "string", updateable=True),
        FieldSpec("LastName", "Last Name", "string", updateable=True, nillable=False),
        FieldSpec("Name", "Full Name", "string", updateable=False),
        FieldSpec("Email", "Email", "email", updateable=True),
        FieldSpec(
            "HasOptedOutOfEmail", "Email Opt Out", "boolean", updateable=True, nillable=False
        ),
        FieldSpec("CreatedDate", "Created Date", "datetime", updateable=False, nillable=False),
        FieldSpec(
            "LastModifiedDate", "Last Modified Date", "datetime", updateable=False, nillable=False
        ),
        FieldSpec(
            "SystemModstamp", "System Modstamp", "datetime", updateable=False, nillable=False
        ),
    ]


@dataclass(frozen=True)
class SObjectSchema:
    name: str
    label: str
    label_plural: str
    key_prefix: str
    fields: tuple[FieldSpec, ...]
    by_lower: dict[str, FieldSpec] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "by_lower", {spec.name.lower(): spec for spec in self.fields})

    def field(self, name: str) -> FieldSpec | None:
        """The field named `name`, case-insensitively, as Salesforce resolves API names."""
        return self.by_lower.get(name.lower())

    def describe(self) -> dict[str, Any]:
        base = f"/services/data/v{API_VERSION}/sobjects/{self.name}"
        return {
            "name": self.name,
            "label": self.label,
            "labelPlural": self.label_plural,
            "keyPrefix": self.key_prefix,
            "custom": False,
            "createable": True,
            "updateable": True,
            "queryable": True,
            "fields": [spec.describe() for spec in self.fields],
            "urls": {
                "sobject": base,
                "describe": f"{base}/describe",
                "rowTemplate": f"{base}/{{ID}}",
            },
        }


def build_schemas(marketo_field: str | None) -> dict[str, SObjectSchema]:
    """Contact and Lead; the Marketo Sales Insight checkbox only when the org 'has the package'."""
    extra: list[FieldSpec] = []
    if marketo_field:
        extra.append(
            FieldSpec(marketo_field, "Marketo Sales Opt Out", "boolean", True, False, True)
        )
    contact = [*_common(), *extra]
    lead = [
        *_common(),
        FieldSpec("Company", "Company", "string", updateable=True, nillable=False),
        FieldSpec("Status", "Lead Status", "picklist", updateable=True, nillable=False),
        FieldSpec("IsConverted", "Converted", "boolean", updateable=False, nillable=False),
        FieldSpec("ConvertedContactId", "Converted Contact ID", "reference", updateable=False),
        *extra,
    ]
    lead[0] = FieldSpec("Id", "Lead ID", "id", updateable=False, nillable=False)
    return {
        "Contact": SObjectSchema("Contact", "Contact", "Contacts", "003", tuple(contact)),
        "Lead": SObjectSchema("Lead", "Lead", "Leads", "00Q", tuple(lead)),
    }
