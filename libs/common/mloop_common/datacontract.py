"""The schema contract of a dataset version: what its columns hold, as ingest recorded and the publisher declared.

Ingest writes one with every published version (``GET /v1/datasets/{name}/versions/{v}`` serves it under
``contract``); the first version defines it and later versions are compared with it. Drift reads it to
judge data quality of production inputs: a wrong type, a null in a non-nullable column, a value outside a
*declared* range or an unknown category breaks the contract. Observed ranges are what the version held,
not limits: values outside them are evidence of covariate shift, not bad data.

The JSON shape is versioned by ``contract_version``; a reader refuses a version it does not know.
"""

from __future__ import annotations

import hashlib
import json
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, computed_field

CONTRACT_VERSION: Literal[1] = 1
ColumnType = Literal["numeric", "boolean", "datetime", "string"]


class ValueRange(BaseModel):
    """Inclusive bounds; ``None`` is unbounded. Numbers for numeric columns, ISO-8601 text for datetimes."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    min: float | str | None = None
    max: float | str | None = None


class Declared(BaseModel):
    """What the publisher declared about a column; a version that breaks it is rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    min: float | None = None
    max: float | None = None
    nullable: bool | None = None


class ColumnContract(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    type: ColumnType
    physical_type: str = Field(description="the Arrow type the version was stored with, e.g. double, string")
    nullable: bool = Field(description="declared by the publisher, else whether the version had missing values")
    missing_rate: float = Field(ge=0, le=1, description="share of missing values in the version")
    categories: list[str] | None = Field(
        None, description="every value of a text or boolean column with few distinct values; None: open domain"
    )
    observed_range: ValueRange | None = Field(None, description="smallest and largest value the version held")
    declared: Declared | None = Field(None, description="physical bounds and nullability the publisher declared")


class DatasetContract(BaseModel):
    # Not extra="forbid": the serialised form carries the computed ``digest``, which reading it back ignores.
    model_config = ConfigDict(frozen=True)

    contract_version: Literal[1] = CONTRACT_VERSION
    target: str
    time_column: str | None = None
    id_column: str | None = None
    columns: list[ColumnContract]

    @computed_field  # type: ignore[prop-decorator]
    @property
    def digest(self) -> str:
        """sha256 of the schema proper (names, types, nullability, in order): equal digests, same schema."""
        schema = [[c.name, c.type, c.nullable] for c in self.columns]
        return hashlib.sha256(json.dumps(schema, separators=(",", ":")).encode()).hexdigest()

    def column(self, name: str) -> ColumnContract | None:
        return next((c for c in self.columns if c.name == name), None)


class Retyped(BaseModel):
    name: str
    before: ColumnType
    after: ColumnType


class NullabilityChange(BaseModel):
    name: str
    before: bool
    after: bool


class CategoryChange(BaseModel):
    name: str
    added: list[str]
    removed: list[str]


class RangeChange(BaseModel):
    name: str
    before: ValueRange | None
    after: ValueRange | None


class DeclarationChange(BaseModel):
    name: str
    before: Declared | None
    after: Declared | None


class ContractDiff(BaseModel):
    """What changed from one contract to another, column by column (columns in both, in the later order)."""

    same_schema: bool = Field(description="equal digests: same names, types and nullability in the same order")
    roles: dict[str, list[str | None]] = Field(
        default_factory=dict, description="target, time_column or id_column that changed: [before, after]"
    )
    added: list[str] = []
    removed: list[str] = []
    retyped: list[Retyped] = []
    nullability: list[NullabilityChange] = []
    categories: list[CategoryChange] = []
    ranges: list[RangeChange] = Field([], description="observed ranges that moved (evidence of shift, not errors)")
    declarations: list[DeclarationChange] = []


def diff_contracts(before: DatasetContract, after: DatasetContract) -> ContractDiff:
    """The changes from ``before`` to ``after`` (pure)."""
    old = {c.name: c for c in before.columns}
    new = {c.name: c for c in after.columns}
    both = [n for n in new if n in old]
    roles: dict[str, list[str | None]] = {
        role: [getattr(before, role), getattr(after, role)]
        for role in ("target", "time_column", "id_column")
        if getattr(before, role) != getattr(after, role)
    }
    categories = []
    for name in both:
        if old[name].categories is not None and new[name].categories is not None:
            was, now = set(old[name].categories or ()), set(new[name].categories or ())
            if was != now:
                categories.append(CategoryChange(name=name, added=sorted(now - was), removed=sorted(was - now)))
    return ContractDiff(
        same_schema=before.digest == after.digest,
        roles=roles,
        added=[n for n in new if n not in old],
        removed=[n for n in old if n not in new],
        retyped=[Retyped(name=n, before=old[n].type, after=new[n].type) for n in both if old[n].type != new[n].type],
        nullability=[
            NullabilityChange(name=n, before=old[n].nullable, after=new[n].nullable)
            for n in both
            if old[n].nullable != new[n].nullable
        ],
        categories=categories,
        ranges=[
            RangeChange(name=n, before=old[n].observed_range, after=new[n].observed_range)
            for n in both
            if old[n].observed_range != new[n].observed_range
        ],
        declarations=[
            DeclarationChange(name=n, before=old[n].declared if n in old else None, after=new[n].declared)
            for n in new
            if (old[n].declared if n in old else None) != new[n].declared
        ],
    )
