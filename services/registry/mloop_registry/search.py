"""The version search language: a small parser from query text to a tree the store turns into SQL.

Grammar (keywords case-insensitive)::

    query      := or
    or         := and ("OR" and)*
    and        := atom ("AND" atom)*
    atom       := "(" or ")" | condition
    condition  := field op value | "tag." KEY          (a tag alone: the version or its model has it)
    field      := name | status | alias | dataset | dataset_version | version | metric.NAME | tag.KEY
    op         := = | != | > | >= | < | <=
    value      := number | word | "double-quoted" | 'single-quoted'

Text fields take ``=`` and ``!=``; numeric ones (version, dataset_version, metric.*) every operator.
The tree is data only: values never become SQL text (the store binds them as parameters).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from mloop_registry.tags import TAG_KEY

MAX_QUERY_CHARS = 2000
MAX_DEPTH = 8  # nested parentheses
MAX_CONDITIONS = 32

Op = Literal["=", "!=", ">", ">=", "<", "<="]
TEXT_FIELDS = {"name", "status", "alias", "dataset"}
NUMERIC_FIELDS = {"version", "dataset_version"}
KEYED_FIELDS = {"metric", "tag"}  # metric.NAME (numeric), tag.KEY (text)

_TOKEN = re.compile(
    r"""\s*(?:(?P<paren>[()])|(?P<op>>=|<=|!=|=|>|<)|"(?P<dq>[^"]*)"|'(?P<sq>[^']*)'|(?P<word>[A-Za-z0-9_.:\-+]+))"""
)


class SearchError(ValueError):
    """A query that cannot be parsed; the message names the offending part."""


@dataclass(frozen=True)
class Condition:
    field: str  # one of TEXT_FIELDS, NUMERIC_FIELDS, "metric" or "tag"
    key: str | None  # the metric name or tag key
    op: Op | None  # None only for a bare tag: "has this tag"
    value: str | float | None


@dataclass(frozen=True)
class And:
    items: tuple[Node, ...]


@dataclass(frozen=True)
class Or:
    items: tuple[Node, ...]


Node = Condition | And | Or


@dataclass(frozen=True)
class _Token:
    kind: Literal["paren", "op", "string", "word"]
    text: str
    at: int  # character position in the query, for error messages


def parse_query(text: str) -> Node:
    """The tree of ``text``; SearchError naming the bad part when it does not follow the grammar."""
    if not text.strip():
        raise SearchError("empty query")
    if len(text) > MAX_QUERY_CHARS:
        raise SearchError(f"query over {MAX_QUERY_CHARS} characters")
    parser = _Parser(_tokens(text))
    tree = parser.or_(depth=0)
    if parser.peek() is not None:
        token = parser.tokens[parser.pos]
        raise SearchError(f"unexpected {token.text!r} at position {token.at}")
    return tree


def _tokens(text: str) -> list[_Token]:
    tokens, pos = [], 0
    while pos < len(text):
        if text[pos:].isspace():
            break
        match = _TOKEN.match(text, pos)
        if match is None:
            at = len(text) - len(text[pos:].lstrip())
            raise SearchError(f"unexpected character {text[at]!r} at position {at}")
        kind = match.lastgroup
        value = match.group(kind) if kind else ""
        start = match.start(kind) if kind else pos
        if kind in ("dq", "sq"):
            tokens.append(_Token("string", value, start - 1))
        else:
            tokens.append(_Token(kind, value, start))  # type: ignore[arg-type]
        pos = match.end()
    return tokens


class _Parser:
    def __init__(self, tokens: list[_Token]) -> None:
        self.tokens, self.pos, self.conditions = tokens, 0, 0

    def peek(self) -> _Token | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self, what: str) -> _Token:
        token = self.peek()
        if token is None:
            raise SearchError(f"query ends where {what} was expected")
        self.pos += 1
        return token

    def keyword(self, word: str) -> bool:
        token = self.peek()
        if token is not None and token.kind == "word" and token.text.upper() == word:
            self.pos += 1
            return True
        return False

    def or_(self, depth: int) -> Node:
        items = [self.and_(depth)]
        while self.keyword("OR"):
            items.append(self.and_(depth))
        return items[0] if len(items) == 1 else Or(tuple(items))

    def and_(self, depth: int) -> Node:
        items = [self.atom(depth)]
        while self.keyword("AND"):
            items.append(self.atom(depth))
        return items[0] if len(items) == 1 else And(tuple(items))

    def atom(self, depth: int) -> Node:
        token = self.take("a condition or '('")
        if token.kind == "paren" and token.text == "(":
            if depth + 1 > MAX_DEPTH:
                raise SearchError(f"parentheses nested deeper than {MAX_DEPTH} at position {token.at}")
            inner = self.or_(depth + 1)
            closing = self.take("')'")
            if closing.text != ")":
                raise SearchError(f"expected ')' at position {closing.at}, found {closing.text!r}")
            return inner
        if token.kind != "word" or token.text.upper() in ("AND", "OR"):
            raise SearchError(f"expected a field at position {token.at}, found {token.text!r}")
        self.conditions += 1
        if self.conditions > MAX_CONDITIONS:
            raise SearchError(f"more than {MAX_CONDITIONS} conditions")
        return self.condition(token)

    def condition(self, token: _Token) -> Condition:
        field, _, key = token.text.partition(".")
        field = field.lower()
        if field in KEYED_FIELDS:
            if not TAG_KEY.fullmatch(key):
                raise SearchError(f"{field}.KEY needs a key of letters, digits, '_', '.', '-' at position {token.at}")
        elif key or field not in TEXT_FIELDS | NUMERIC_FIELDS:
            known = ", ".join(sorted(TEXT_FIELDS | NUMERIC_FIELDS | {"metric.NAME", "tag.KEY"}))
            raise SearchError(f"unknown field {token.text!r} at position {token.at} (known: {known})")
        op_token = self.peek()
        if op_token is None or op_token.kind != "op":
            if field == "tag":
                return Condition("tag", key, None, None)
            found = f"found {op_token.text!r}" if op_token else "the query ends"
            raise SearchError(f"expected an operator after {token.text!r} at position {token.at}, {found}")
        self.pos += 1
        op: Op = op_token.text  # type: ignore[assignment]
        value_token = self.take(f"a value after {token.text} {op}")
        if value_token.kind not in ("word", "string"):
            raise SearchError(f"expected a value at position {value_token.at}, found {value_token.text!r}")
        if field in NUMERIC_FIELDS or field == "metric":
            try:
                number = float(value_token.text)
            except ValueError:
                raise SearchError(
                    f"{token.text} compares numbers: {value_token.text!r} at position {value_token.at} is not one"
                ) from None
            if number != number or number in (float("inf"), float("-inf")):
                raise SearchError(f"{value_token.text!r} at position {value_token.at} is not a finite number")
            return Condition(field, key or None, op, number)
        if op not in ("=", "!="):
            raise SearchError(f"{token.text} takes = or != (position {op_token.at}), not {op}")
        return Condition(field, key or None, op, value_token.text)
