"""Salesforce's error vocabulary: a REST error is a list of {message, errorCode[, fields]}."""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """A request-level failure, rendered as Salesforce renders it: status plus an error list."""

    def __init__(
        self, status: int, code: str, message: str, fields: list[str] | None = None
    ) -> None:
        super().__init__(f"{code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.fields = fields

    def body(self) -> list[dict[str, Any]]:
        error: dict[str, Any] = {"message": self.message, "errorCode": self.code}
        if self.fields is not None:
            error["fields"] = self.fields
        return [error]


class RecordError(Exception):
    """A per-record DML failure (collections, bulk rows); a single PATCH turns it into a 400."""

    def __init__(self, code: str, message: str, fields: list[str] | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.fields = fields or []

    def as_result(self) -> dict[str, Any]:
        return {"statusCode": self.code, "message": self.message, "fields": self.fields}

    def as_api_error(self) -> ApiError:
        return ApiError(400, self.code, self.message, self.fields)

    def as_bulk_error(self) -> str:
        return f"{self.code}:{self.message}:{','.join(self.fields)} --"


def session_invalid() -> ApiError:
    return ApiError(401, "INVALID_SESSION_ID", "Session expired or invalid")


def limit_exceeded() -> ApiError:
    return ApiError(403, "REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded.")


def not_found() -> ApiError:
    return ApiError(404, "NOT_FOUND", "The requested resource does not exist")
