"""Comparing two dataset contracts (pure)."""

from __future__ import annotations

from mloop_common.datacontract import ColumnContract, DatasetContract, Declared, ValueRange, diff_contracts


def column(name: str, **changes: object) -> ColumnContract:
    fields: dict[str, object] = {
        "name": name,
        "type": "numeric",
        "physical_type": "double",
        "nullable": False,
        "missing_rate": 0.0,
        "observed_range": ValueRange(min=0.0, max=1.0),
    }
    return ColumnContract.model_validate({**fields, **changes})


BEFORE = DatasetContract(
    target="churned",
    columns=[
        column("usage", declared=Declared(min=0)),
        column("age"),
        column("plan", type="string", physical_type="string", categories=["basic", "pro"], observed_range=None),
        column("gone"),
        column("churned", type="string", physical_type="string", categories=["no", "yes"], observed_range=None),
    ],
)


def test_the_same_contract_has_no_changes():
    diff = diff_contracts(BEFORE, BEFORE)

    assert diff.same_schema and diff.model_dump(exclude={"same_schema"}) == {
        "roles": {},
        "added": [],
        "removed": [],
        "retyped": [],
        "nullability": [],
        "categories": [],
        "ranges": [],
        "declarations": [],
    }


def test_every_kind_of_change_is_named():
    after = DatasetContract(
        target="churned",
        id_column="usage",
        columns=[
            column("usage", declared=Declared(min=0, max=100), nullable=True),
            column("age", type="string", physical_type="string", observed_range=None),
            column("plan", type="string", physical_type="string", categories=["pro", "team"], observed_range=None),
            column("churned", type="string", physical_type="string", categories=["no", "yes"], observed_range=None),
            column("region", observed_range=ValueRange(min=0.0, max=5.0)),
        ],
    )

    diff = diff_contracts(BEFORE, after)

    assert not diff.same_schema and diff.roles == {"id_column": [None, "usage"]}
    assert (diff.added, diff.removed) == (["region"], ["gone"])
    assert [(r.name, r.before, r.after) for r in diff.retyped] == [("age", "numeric", "string")]
    assert [(n.name, n.before, n.after) for n in diff.nullability] == [("usage", False, True)]
    assert [(c.name, c.added, c.removed) for c in diff.categories] == [("plan", ["team"], ["basic"])]
    assert [r.name for r in diff.ranges] == ["age"]  # its range went with its numeric type
    assert [(d.name, d.after) for d in diff.declarations] == [("usage", Declared(min=0, max=100))]
