"""A SOQL subset: a tokenizer, a recursive-descent parser, and record predicates compiled from it.

Grammar (keywords case-insensitive):
    query     := SELECT (COUNT '(' ')' | field (',' field)*) FROM object
                 [WHERE expr] [ORDER BY order (',' order)*] [LIMIT int] [OFFSET int]
    expr      := unary ((AND unary)* | (OR unary)*)      -- mixing needs parentheses, as in SOQL
    unary     := NOT unary | '(' expr ')' | field op literal | field [NOT] IN '(' literal, ... ')'
                 | field LIKE string
    order     := field [ASC | DESC] [NULLS (FIRST | LAST)]
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sandbox.errors import ApiError
from sandbox.ids import InvalidSalesforceId, to_18
from sandbox.schema import FieldSpec, SObjectSchema
from sandbox.store import Record, parse_datetime

Predicate = Callable[[Record], bool]
_KEYWORDS = {
    "SELECT",
    "FROM",
    "WHERE",
    "AND",
    "OR",
    "NOT",
    "IN",
    "LIKE",
    "ORDER",
    "BY",
    "ASC",
    "DESC",
    "NULLS",
    "FIRST",
    "LAST",
    "LIMIT",
    "OFFSET",
    "TRUE",
    "FALSE",
    "NULL",
    "COUNT",
}
_DATETIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,3})?(?:Z|[+-]\d{2}:?\d{2})")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*")
_ESCAPES = {"'": "'", '"': '"', "\\": "\\", "n": "\n", "r": "\r", "t": "\t", "b": "\b", "f": "\f"}
_TEXT_TYPES = {"string", "email", "picklist", "id", "reference"}


@dataclass(frozen=True)
class Token:
    kind: str  # IDENT, KEYWORD, STRING, NUMBER, DATETIME, DATE, OP, PUNCT, EOF
    text: str
    value: Any
    column: int  # 1-based, for Salesforce's "ERROR at Row:1:Column:N"


def _malformed(source: str, column: int, message: str, code: str = "MALFORMED_QUERY") -> ApiError:
    caret = " " * (column - 1) + "^"
    return ApiError(400, code, f"\n{source}\n{caret}\nERROR at Row:1:Column:{column}\n{message}")


def tokenize(source: str) -> list[Token]:
    tokens: list[Token] = []
    pos = 0
    while pos < len(source):
        char = source[pos]
        column = pos + 1
        if char.isspace():
            pos += 1
        elif char == "'":
            text, pos = _read_string(source, pos)
            tokens.append(Token("STRING", source[column - 1 : pos], text, column))
        elif char in "(),":
            tokens.append(Token("PUNCT", char, char, column))
            pos += 1
        elif source.startswith(("!=", "<>", "<=", ">="), pos):
            tokens.append(
                Token(
                    "OP",
                    "!=" if source[pos : pos + 2] == "<>" else source[pos : pos + 2],
                    None,
                    column,
                )
            )
            pos += 2
        elif char in "=<>":
            tokens.append(Token("OP", char, None, column))
            pos += 1
        elif char.isdigit() or (char == "-" and source[pos + 1 : pos + 2].isdigit()):
            pos = _read_literal(source, pos, tokens)
        elif match := _IDENT.match(source, pos):
            word = match.group()
            kind = "KEYWORD" if word.upper() in _KEYWORDS else "IDENT"
            tokens.append(Token(kind, word, word.upper() if kind == "KEYWORD" else word, column))
            pos = match.end()
        else:
            raise _malformed(source, column, f"unexpected token: '{char}'")
    tokens.append(Token("EOF", "", None, len(source) + 1))
    return tokens


def _read_string(source: str, start: int) -> tuple[str, int]:
    out: list[str] = []
    pos = start + 1
    while pos < len(source):
        char = source[pos]
        if char == "'":
            return "".join(out), pos + 1
        if char == "\\":
            nxt = source[pos + 1 : pos + 2]
            if nxt in _ESCAPES:
                out.append(_ESCAPES[nxt])
            elif nxt in ("_", "%"):
                out.append("\\" + nxt)  # kept escaped: only LIKE gives them meaning
            elif nxt == "u" and re.fullmatch(r"[0-9a-fA-F]{4}", source[pos + 2 : pos + 6]):
                out.append(chr(int(source[pos + 2 : pos + 6], 16)))
                pos += 4
            else:
                raise _malformed(source, pos + 1, "Invalid string literal: bad escape sequence")
            pos += 2
            continue
        out.append(char)
        pos += 1
    raise _malformed(
        source, start + 1, f"line 1:{len(source)} mismatched character '<EOF>' expecting '''"
    )


def _read_literal(source: str, pos: int, tokens: list[Token]) -> int:
    for kind, pattern in (("DATETIME", _DATETIME), ("DATE", _DATE), ("NUMBER", _NUMBER)):
        match = pattern.match(source, pos)
        if match:
            text = match.group()
            value: Any = text
            if kind == "DATETIME":
                value = parse_datetime(text)
            elif kind == "NUMBER":
                value = float(text) if "." in text else int(text)
            tokens.append(Token(kind, text, value, pos + 1))
            return match.end()
    raise _malformed(source, pos + 1, f"unexpected token: '{source[pos]}'")


@dataclass
class Query:
    sobject: SObjectSchema
    fields: list[str]
    count_only: bool = False
    where: Predicate | None = None
    order: list[tuple[str, bool, bool]] = field(default_factory=list)  # (field, desc, nulls first)
    limit: int | None = None
    offset: int = 0

    def run(self, records: list[Record]) -> list[Record]:
        rows = [r for r in records if self.where(r)] if self.where else list(records)
        for name, desc, nulls_first in reversed(self.order):
            null_rank = 0 if nulls_first != desc else 2
            rows.sort(key=lambda r, n=name, k=null_rank: _sort_key(r.get(n), k), reverse=desc)  # type: ignore[misc]
        rows = rows[self.offset :]
        return rows if self.limit is None else rows[: self.limit]


def _sort_key(value: Any, null_rank: int) -> tuple[int, Any]:
    if value is None:
        return (null_rank, 0)
    return (1, value.lower() if isinstance(value, str) else value)


class Parser:
    def __init__(self, source: str, schemas: Callable[[str], SObjectSchema | None]) -> None:
        self.source = source
        self.tokens = tokenize(source)
        self.pos = 0
        self.schemas = schemas
        self.schema: SObjectSchema | None = None

    # --- token helpers -------------------------------------------------------------------
    @property
    def current(self) -> Token:
        return self.tokens[self.pos]

    def error(self, token: Token | None = None, message: str | None = None) -> ApiError:
        token = token or self.current
        text = token.text or "<EOF>"
        return _malformed(self.source, token.column, message or f"unexpected token: '{text}'")

    def accept(self, kind: str, text: str | None = None) -> Token | None:
        token = self.current
        if token.kind == kind and (text is None or token.value == text or token.text == text):
            self.pos += 1
            return token
        return None

    def expect(self, kind: str, text: str | None = None) -> Token:
        token = self.accept(kind, text)
        if token is None:
            raise self.error()
        return token

    # --- grammar ---------------------------------------------------------------------------
    def parse(self) -> Query:
        self.expect("KEYWORD", "SELECT")
        count_only = False
        raw_fields: list[Token] = []
        if self.accept("KEYWORD", "COUNT"):
            self.expect("PUNCT", "(")
            self.expect("PUNCT", ")")
            count_only = True
        else:
            raw_fields.append(self.expect("IDENT"))
            while self.accept("PUNCT", ","):
                raw_fields.append(self.expect("IDENT"))
        self.expect("KEYWORD", "FROM")
        object_token = self.expect("IDENT")
        self.schema = self.schemas(object_token.text)
        if self.schema is None:
            raise _malformed(
                self.source,
                object_token.column,
                f"sObject type '{object_token.text}' is not supported. If you are attempting to use "
                "a custom object, be sure to append the '__c' after the entity name. Please reference "
                "your WSDL or the describe call for the appropriate names.",
                "INVALID_TYPE",
            )
        fields: list[str] = []
        for token in raw_fields:
            name = self.resolve(token).name
            if name in fields:
                raise self.error(token, f"duplicate field selected: {name}")
            fields.append(name)
        query = Query(self.schema, fields, count_only)
        if self.accept("KEYWORD", "WHERE"):
            query.where = self.expression()
        if self.accept("KEYWORD", "ORDER"):
            self.expect("KEYWORD", "BY")
            query.order.append(self.order_item())
            while self.accept("PUNCT", ","):
                query.order.append(self.order_item())
        if self.accept("KEYWORD", "LIMIT"):
            query.limit = self.non_negative()
        if self.accept("KEYWORD", "OFFSET"):
            query.offset = self.non_negative()
        self.expect("EOF")
        return query

    def non_negative(self) -> int:
        token = self.expect("NUMBER")
        if not isinstance(token.value, int) or token.value < 0:
            raise self.error(token)
        return token.value

    def resolve(self, token: Token) -> FieldSpec:
        assert self.schema is not None
        spec = self.schema.field(token.text)
        if spec is None:
            raise _malformed(
                self.source,
                token.column,
                f"No such column '{token.text}' on entity '{self.schema.name}'. If you are attempting "
                "to use a custom field, be sure to append the '__c' after the custom field name. "
                "Please reference your WSDL or the describe call for the appropriate names.",
                "INVALID_FIELD",
            )
        return spec

    def order_item(self) -> tuple[str, bool, bool]:
        spec = self.resolve(self.expect("IDENT"))
        desc = bool(self.accept("KEYWORD", "DESC"))
        if not desc:
            self.accept("KEYWORD", "ASC")
        nulls_first = not desc
        if self.accept("KEYWORD", "NULLS"):
            nulls_first = bool(self.accept("KEYWORD", "FIRST")) or not self.expect(
                "KEYWORD", "LAST"
            )
        return spec.name, desc, nulls_first

    def expression(self) -> Predicate:
        terms = [self.unary()]
        joiner: str | None = None
        while self.current.kind == "KEYWORD" and self.current.value in ("AND", "OR"):
            if joiner is not None and self.current.value != joiner:
                raise self.error()  # SOQL refuses `a AND b OR c` without parentheses
            joiner = self.current.value
            self.pos += 1
            terms.append(self.unary())
        if joiner is None:
            return terms[0]
        if joiner == "AND":
            return lambda r: all(term(r) for term in terms)
        return lambda r: any(term(r) for term in terms)

    def unary(self) -> Predicate:
        if self.accept("KEYWORD", "NOT"):
            inner = self.unary()
            return lambda r: not inner(r)
        if self.accept("PUNCT", "("):
            inner = self.expression()
            self.expect("PUNCT", ")")
            return inner
        return self.condition()

    def condition(self) -> Predicate:
        spec = self.resolve(self.expect("IDENT"))
        if self.current.kind == "KEYWORD" and self.current.value in ("NOT", "IN"):
            negated = bool(self.accept("KEYWORD", "NOT"))
            self.expect("KEYWORD", "IN")
            self.expect("PUNCT", "(")
            values = [self.literal(spec)]
            while self.accept("PUNCT", ","):
                values.append(self.literal(spec))
            self.expect("PUNCT", ")")
            return _membership(spec, values, negated)
        if self.accept("KEYWORD", "LIKE"):
            token = self.expect("STRING")
            if spec.type not in _TEXT_TYPES:
                raise self.error(token, f"invalid operator on {spec.type} field: LIKE")
            return _like(spec.name, token.value)
        op = self.expect("OP")
        value = self.literal(spec)
        if spec.type == "boolean" and op.text not in ("=", "!="):
            raise self.error(op, f"invalid operator on boolean field: {op.text}")
        return _comparison(spec, op.text, value)

    def literal(self, spec: FieldSpec) -> Any:
        token = self.current
        self.pos += 1
        if token.kind == "KEYWORD" and token.value == "NULL":
            return None
        expected = {"boolean": "boolean", "datetime": "dateTime"}.get(spec.type, "string")
        ok = (
            (expected == "boolean" and token.kind == "KEYWORD" and token.value in ("TRUE", "FALSE"))
            or (expected == "dateTime" and token.kind == "DATETIME")
            or (expected == "string" and token.kind == "STRING")
        )
        if token.kind in ("EOF", "PUNCT", "OP") or (token.kind == "KEYWORD" and not ok):
            raise self.error(token)
        if not ok:
            quoted = " and should not be enclosed in quotes" if expected != "string" else ""
            raise _malformed(
                self.source,
                token.column,
                f"value of filter criterion for field '{spec.name}' must be of type {expected}{quoted}",
                "INVALID_FIELD",
            )
        if expected == "boolean":
            return token.value == "TRUE"
        if spec.type in ("id", "reference"):
            try:
                return to_18(token.value)
            except InvalidSalesforceId:
                raise _malformed(
                    self.source,
                    token.column,
                    f"invalid ID field: {token.value}",
                    "INVALID_QUERY_FILTER_OPERATOR",
                ) from None
        return token.value


def _fold(value: Any) -> Any:
    # Text equality in SOQL ignores case; ids were normalised to 18 characters first.
    return value.lower() if isinstance(value, str) else value


def _comparison(spec: FieldSpec, op: str, literal: Any) -> Predicate:
    name, target = spec.name, _fold(literal)
    if op == "=":
        return lambda r: _fold(r.get(name)) == target
    if op == "!=":
        return lambda r: _fold(r.get(name)) != target
    compare: dict[str, Callable[[Any, Any], bool]] = {
        "<": lambda a, b: a < b,
        ">": lambda a, b: a > b,
        "<=": lambda a, b: a <= b,
        ">=": lambda a, b: a >= b,
    }
    check = compare[op]
    # Ordering against null matches nothing, as in SOQL.
    return lambda r: (
        (v := r.get(name)) is not None and target is not None and check(_fold(v), target)
    )


def _membership(spec: FieldSpec, values: list[Any], negated: bool) -> Predicate:
    name, targets = spec.name, {_fold(v) for v in values}
    if negated:
        return lambda r: _fold(r.get(name)) not in targets
    return lambda r: _fold(r.get(name)) in targets


def _like(name: str, pattern: str) -> Predicate:
    parts: list[str] = []
    i = 0
    while i < len(pattern):
        if pattern[i] == "\\" and i + 1 < len(pattern):
            parts.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        parts.append({"%": ".*", "_": "."}.get(pattern[i], re.escape(pattern[i])))
        i += 1
    regex = re.compile("".join(parts), re.IGNORECASE | re.DOTALL)
    return lambda r: isinstance(v := r.get(name), str) and regex.fullmatch(v) is not None


def parse(source: str, schemas: Callable[[str], SObjectSchema | None]) -> Query:
    """A runnable query, or ApiError(400) with MALFORMED_QUERY / INVALID_FIELD / INVALID_TYPE."""
    return Parser(source, schemas).parse()
