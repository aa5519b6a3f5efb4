"""A version's schema contract: built from its facts and what the publisher declared (pure)."""

from __future__ import annotations

from datetime import UTC, datetime

import pandas as pd
from pydantic import BaseModel, ConfigDict, ValidationError

from mloop_common.datacontract import ColumnContract, DatasetContract, Declared, ValueRange
from mloop_common.errors import InvalidInput
from mloop_ingest.profiling import ColumnFacts, TableFacts
from mloop_ingest.reading import column_type


class Declaration(BaseModel):
    """The optional ``contract`` form field (or sidecar JSON): an id column and per-column declarations.

    ``{"id_column": "customer_id", "columns": {"age": {"min": 0, "max": 130, "nullable": false}}}``
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    id_column: str | None = None
    columns: dict[str, Declared] = {}


def parse_declaration(text: str | None) -> Declaration:
    if not text or not text.strip():
        return Declaration()
    try:
        return Declaration.model_validate_json(text)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise InvalidInput(f"contract: {where + ': ' if where else ''}{first['msg']}", field="contract") from exc


def effective_declaration(
    declaration: Declaration, previous: DatasetContract | None, frame: pd.DataFrame
) -> tuple[dict[str, Declared], str | None]:
    """What holds for this version: the previous version's declarations, overridden by this upload's.

    Declarations carry over so that a publisher states a physical bound once; a declared column that is
    gone from the file simply drops out (the schema check reports the removal).
    """
    declared: dict[str, Declared] = {}
    id_column = declaration.id_column
    if previous is not None:
        declared = {c.name: c.declared for c in previous.columns if c.declared is not None and c.name in frame}
        if id_column is None and previous.id_column is not None and previous.id_column in frame.columns:
            id_column = previous.id_column
    for name, item in declaration.columns.items():
        if name not in frame.columns:
            raise InvalidInput(f"contract declares column {name!r}, which is not in the file", field="contract")
        bounded = item.min is not None or item.max is not None
        if bounded and column_type(frame[name]) != "numeric":
            raise InvalidInput(f"contract: a range is declared for {name!r}, which is not numeric", field="contract")
        if item.min is not None and item.max is not None and item.min > item.max:
            raise InvalidInput(f"contract: declared min of {name!r} is above its max", field="contract")
        declared[name] = item
    if id_column is not None and id_column not in frame.columns:
        raise InvalidInput(f"contract names id column {id_column!r}, which is not in the file", field="contract")
    return declared, id_column


def _iso(seconds: float | None) -> str | None:
    return None if seconds is None else datetime.fromtimestamp(seconds, UTC).isoformat()


def _observed(facts: ColumnFacts) -> ValueRange | None:
    if facts.min is None:
        return None
    if facts.type == "datetime":
        return ValueRange(min=_iso(facts.min), max=_iso(facts.max))
    return ValueRange(min=facts.min, max=facts.max)


def build_contract(
    facts: TableFacts,
    *,
    time_column: str | None,
    id_column: str | None,
    declared: dict[str, Declared],
    category_limit: int,
) -> DatasetContract:
    columns = []
    for name, column in facts.columns.items():
        claim = declared.get(name)
        nullable = claim.nullable if claim is not None and claim.nullable is not None else column.missing > 0
        counts = column.counts if column.type in ("string", "boolean") else None
        categories = sorted(counts) if counts is not None and len(counts) <= category_limit else None
        columns.append(
            ColumnContract(
                name=name,
                type=column.type,
                physical_type=column.arrow_type,
                nullable=nullable,
                missing_rate=round(column.missing_rate, 6),
                categories=categories,
                observed_range=_observed(column) if column.type in ("numeric", "datetime") else None,
                declared=claim,
            )
        )
    return DatasetContract(target=facts.target, time_column=time_column, id_column=id_column, columns=columns)
