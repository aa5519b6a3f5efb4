"""Dataset validation rules (pure): each check reads the table's facts, the previous version and the policy.

A check is a registered function returning one ``CheckResult`` with the number it measured, the
threshold that decided its severity and a few example rows (0-based data rows, header excluded). Any
``error`` rejects the version; ``warning`` publishes it with the warning; ``info`` is a pass.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, computed_field, model_validator

from mloop_common.datacontract import DatasetContract
from mloop_common.errors import InvalidInput
from mloop_ingest.profiling import ColumnFacts, TableFacts

Severity = Literal["error", "warning", "info"]
WORST = 20  # per-column numbers kept in a result: the worst offenders
_LEGACY_SEVERITY: dict[str, Severity] = {"pass": "info", "warn": "warning", "fail": "error"}


class Limit(BaseModel):
    """Thresholds of one measure: above ``warning`` warns, above ``error`` rejects; ``None`` never does."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    warning: float | None = Field(None, ge=0)
    error: float | None = Field(None, ge=0)

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.warning is not None and self.error is not None and self.warning > self.error:
            raise ValueError("warning threshold is above the error threshold")
        return self

    def judge(self, observed: float) -> tuple[Severity, float | None]:
        """The severity of ``observed`` and the threshold it passed (or the one it stayed under)."""
        if self.error is not None and observed > self.error:
            return "error", self.error
        if self.warning is not None and observed > self.warning:
            return "warning", self.warning
        return "info", self.warning if self.warning is not None else self.error


class CheckPolicy(BaseModel):
    """Every threshold of the checks, with their defaults (MLOOP_INGEST_CHECKS__<NAME>__WARNING / __ERROR)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    missing_rate: Limit = Field(Limit(warning=0.05, error=0.5), description="share of missing values in a column")
    missing_rate_increase: Limit = Field(
        Limit(warning=0.1), description="rise of a column's missing share since the previous version (0.1 = +10 pts)"
    )
    duplicate_rows: Limit = Field(Limit(warning=0.0, error=0.2), description="share of rows repeating an earlier row")
    duplicate_ids: Limit = Field(Limit(error=0.0), description="share of rows repeating an id (declared id column)")
    outlier_rate: Limit = Field(Limit(warning=0.01), description="share of a numeric column outside the IQR fences")
    iqr_factor: float = Field(3.0, gt=0, description="fences at q1 - k*IQR and q3 + k*IQR ('far out' for k=3)")
    label_shift: Limit = Field(
        Limit(warning=0.1, error=0.25), description="total variation distance of label shares vs the previous version"
    )
    split_label_difference: Limit = Field(
        Limit(warning=0.1), description="total variation distance of label shares, training vs held-out rows"
    )
    split_feature_difference: Limit = Field(
        Limit(warning=0.25),
        description="training vs held-out: standardised mean difference (numeric) or TVD of shares (categorical)",
    )
    holdout: float = Field(0.2, gt=0, lt=0.9, description="held-out share of the trainer's split (spec default)")
    seed: int = Field(42, description="seed of the trainer's split (spec default)")
    row_count_drop: Limit = Field(Limit(warning=0.5), description="share of the previous version's rows gone")
    label_missing: Limit = Field(Limit(warning=0.0, error=0.99), description="share of rows without a label")
    constant_columns: Severity = "warning"
    unsorted_time: Severity = "warning"
    removed_columns: Severity = "error"
    retyped_columns: Severity = "error"
    added_columns: Severity = "warning"
    new_categories: Severity = "info"
    range_changes: Severity = "info"
    category_limit: int = Field(100, gt=0, description="a text column with more distinct values has an open domain")


def with_overrides(default: CheckPolicy, overrides: Mapping[str, Any]) -> CheckPolicy:
    """A dataset's policy: ``default`` with each field named in ``overrides`` replaced whole.

    A replaced limit is the given one (``{"label_shift": {"warning": 0.05}}`` has no error threshold);
    InvalidInput names the first bad field, e.g. ``label_shift.warning``.
    """
    try:
        return CheckPolicy.model_validate({**default.model_dump(), **overrides})
    except ValidationError as exc:
        first = exc.errors()[0]
        name = ".".join(str(p) for p in first["loc"]) or "policy"
        raise InvalidInput(f"{name}: {first['msg']}", field=name) from exc


class CheckResult(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    severity: Severity
    message: str
    observed: float | None = None
    threshold: float | None = None
    columns: dict[str, float] = Field(default_factory=dict, description="per-column numbers, worst first")
    examples: list[int] = Field(default_factory=list, description="example rows (0-based, header excluded)")

    @model_validator(mode="before")
    @classmethod
    def _legacy_status(cls, value: Any) -> Any:
        """Reports recorded before severities said ``status: pass|warn|fail``; they must stay readable."""
        if isinstance(value, dict) and "severity" not in value and value.get("status") in _LEGACY_SEVERITY:
            return {**value, "severity": _LEGACY_SEVERITY[value["status"]]}
        return value


class Report(BaseModel):
    """The validation report recorded with every version; any error rejects the version."""

    checks: list[CheckResult] = []

    @computed_field  # type: ignore[prop-decorator]
    @property
    def accepted(self) -> bool:
        return all(c.severity != "error" for c in self.checks)

    def failures(self) -> list[CheckResult]:
        return [c for c in self.checks if c.severity == "error"]

    def warnings(self) -> list[CheckResult]:
        return [c for c in self.checks if c.severity == "warning"]


@dataclass(frozen=True)
class Previous:
    """The newest published version before this one, as the checks compare with it."""

    version: int
    rows: int
    contract: DatasetContract
    labels: dict[str, int] | None


Check = Callable[[TableFacts, Previous | None, CheckPolicy], CheckResult | None]
CHECKS: list[Check] = []


def check(function: Check) -> Check:
    """Register a check; checks run in registration order."""
    CHECKS.append(function)
    return function


def run_checks(facts: TableFacts, previous: Previous | None, policy: CheckPolicy) -> Report:
    return Report(checks=[r for c in CHECKS if (r := c(facts, previous, policy)) is not None])


def _worst(values: dict[str, float]) -> dict[str, float]:
    return dict(sorted(values.items(), key=lambda kv: -kv[1])[:WORST])


def _pct(share: float) -> str:
    return f"{share:.1%}"


def total_variation(a: dict[str, int], b: dict[str, int]) -> float:
    """Half the L1 distance between two count vectors' shares: 0 same shares, 1 disjoint."""
    total_a, total_b = sum(a.values()), sum(b.values())
    if not total_a or not total_b:
        return 0.0
    return sum(abs(a.get(k, 0) / total_a - b.get(k, 0) / total_b) for k in set(a) | set(b)) / 2


@check
def row_count(facts: TableFacts, previous: Previous | None, policy: CheckPolicy) -> CheckResult:
    if previous is None or previous.rows == 0:
        return CheckResult(name="row_count", severity="info", message=f"{facts.rows} rows", observed=facts.rows)
    drop = max(0.0, 1 - facts.rows / previous.rows)
    severity, threshold = policy.row_count_drop.judge(drop)
    change = facts.rows / previous.rows - 1
    return CheckResult(
        name="row_count",
        severity=severity,
        message=f"{facts.rows} rows, {change:+.1%} vs version {previous.version} ({previous.rows} rows)",
        observed=drop,
        threshold=threshold,
    )


@check
def schema(facts: TableFacts, previous: Previous | None, policy: CheckPolicy) -> CheckResult | None:
    """Columns removed, added or retyped, new categories and observed ranges moved, vs the previous contract."""
    if previous is None:
        return None
    before = {c.name: c for c in previous.contract.columns}
    now = facts.columns
    removed = sorted(set(before) - set(now))
    added = sorted(set(now) - set(before))
    retyped = sorted(n for n in set(before) & set(now) if before[n].type != now[n].type)
    findings: list[tuple[Severity, str]] = []
    if removed:
        findings.append((policy.removed_columns, f"removed columns {removed[:WORST]}"))
    if retyped:
        changes = ", ".join(f"{n}: {before[n].type} -> {now[n].type}" for n in retyped[:WORST])
        findings.append((policy.retyped_columns, f"retyped columns {changes}"))
    if added:
        findings.append((policy.added_columns, f"new columns {added[:WORST]}"))
    new_categories: dict[str, float] = {}
    moved: list[str] = []
    for name in sorted(set(before) & set(now)):
        old, facts_now = before[name], now[name]
        if old.categories is not None and facts_now.counts is not None and old.type == facts_now.type:
            fresh = set(facts_now.counts) - set(old.categories)
            if fresh:
                new_categories[name] = len(fresh)
        elif old.observed_range is not None and facts_now.min is not None and old.type == facts_now.type == "numeric":
            low, high = old.observed_range.min, old.observed_range.max
            if isinstance(low, float) and isinstance(high, float) and (facts_now.min < low or facts_now.max > high):  # type: ignore[operator]
                moved.append(f"{name} [{facts_now.min:.4g}, {facts_now.max:.4g}] was [{low:.4g}, {high:.4g}]")
    if new_categories:
        findings.append((policy.new_categories, f"new categories in {sorted(new_categories)[:WORST]}"))
    if moved:
        findings.append((policy.range_changes, "range beyond the previous version: " + "; ".join(moved[:5])))
    order: dict[Severity, int] = {"error": 0, "warning": 1, "info": 2}
    severity: Severity = min((s for s, _ in findings), key=order.__getitem__, default="info")
    message = "; ".join(m for _, m in findings) or f"same columns and types as version {previous.version}"
    return CheckResult(
        name="schema",
        severity=severity,
        message=message,
        observed=float(len(removed) + len(retyped) + len(added)),
        columns=_worst(new_categories),
    )


@check
def declared_contract(facts: TableFacts, previous: Previous | None, policy: CheckPolicy) -> CheckResult | None:
    """Values outside declared ranges and missing values in columns declared non-nullable: always an error."""
    del previous, policy
    breaches = {n: float(c.out_of_range) for n, c in facts.columns.items() if c.out_of_range}
    nulls = {n: float(c.missing) for n, c in facts.columns.items() if c.missing and n in facts.non_nullable}
    if not facts.declared_columns:
        return None
    if not breaches and not nulls:
        return CheckResult(
            name="declared_contract", severity="info", message="every declared range and nullability holds"
        )
    parts = [f"{int(v)} values of {n!r} outside its declared range" for n, v in _worst(breaches).items()]
    parts += [f"{int(v)} missing values in non-nullable {n!r}" for n, v in _worst(nulls).items()]
    examples = [e for n in breaches for e in facts.columns[n].out_of_range_examples]
    examples += [e for n in nulls for e in facts.columns[n].missing_examples]
    return CheckResult(
        name="declared_contract",
        severity="error",
        message="; ".join(parts),
        observed=sum(breaches.values()) + sum(nulls.values()),
        threshold=0,
        columns=_worst({**breaches, **nulls}),
        examples=sorted(set(examples))[:5],
    )


@check
def label_present(facts: TableFacts, previous: Previous | None, policy: CheckPolicy) -> CheckResult:
    del previous
    target = facts.columns[facts.target]
    severity, threshold = policy.label_missing.judge(target.missing_rate)
    if target.missing == target.rows:
        severity, threshold = "error", policy.label_missing.error
    message = f"target {facts.target!r}: {target.missing} rows without a label ({_pct(target.missing_rate)})"
    return CheckResult(
        name="label_present",
        severity=severity,
        message=message,
        observed=target.missing_rate,
        threshold=threshold,
        examples=target.missing_examples,
    )


@check
def missing_values(facts: TableFacts, previous: Previous | None, policy: CheckPolicy) -> CheckResult:
    rates = {n: c.missing_rate for n, c in facts.columns.items() if c.missing and n != facts.target}
    worst = max(rates.values(), default=0.0)
    severity, threshold = policy.missing_rate.judge(worst)
    over = {n: r for n, r in rates.items() if threshold is not None and r > threshold}
    if severity == "info":
        message = f"highest missing share {_pct(worst)}" + (
            f" ({max(rates, key=rates.__getitem__)!r})" if rates else ""
        )
    else:
        message = f"{len(over)} columns over {_pct(threshold or 0)} missing, worst {_pct(worst)}"
    worst_column = max(rates, key=rates.__getitem__) if rates else None
    return CheckResult(
        name="missing_values",
        severity=severity,
        message=message,
        observed=worst,
        threshold=threshold,
        columns=_worst(rates),
        examples=facts.columns[worst_column].missing_examples if worst_column else [],
    )


@check
def missing_values_increase(facts: TableFacts, previous: Previous | None, policy: CheckPolicy) -> CheckResult | None:
    if previous is None:
        return None
    before = {c.name: c.missing_rate for c in previous.contract.columns}
    rises = {n: c.missing_rate - before[n] for n, c in facts.columns.items() if n in before}
    rises = {n: r for n, r in rises.items() if r > 0}
    worst = max(rises.values(), default=0.0)
    severity, threshold = policy.missing_rate_increase.judge(worst)
    if rises:
        name = max(rises, key=rises.__getitem__)
        message = (
            f"missing share of {name!r} rose from {_pct(before[name])} to {_pct(facts.columns[name].missing_rate)}"
            f" since version {previous.version}"
        )
    else:
        message = f"no column has more missing values than in version {previous.version}"
    return CheckResult(
        name="missing_values_increase",
        severity=severity,
        message=message,
        observed=worst,
        threshold=threshold,
        columns=_worst(rises),
    )


@check
def duplicate_rows(facts: TableFacts, previous: Previous | None, policy: CheckPolicy) -> CheckResult:
    del previous
    share = facts.duplicate_rows / facts.rows if facts.rows else 0.0
    severity, threshold = policy.duplicate_rows.judge(share)
    return CheckResult(
        name="duplicate_rows",
        severity=severity,
        message=f"{facts.duplicate_rows} rows repeat an earlier row exactly ({_pct(share)})",
        observed=share,
        threshold=threshold,
        examples=facts.duplicate_examples,
    )


@check
def duplicate_ids(facts: TableFacts, previous: Previous | None, policy: CheckPolicy) -> CheckResult | None:
    del previous
    if facts.id_column is None:
        return None
    share = facts.duplicate_ids / facts.rows if facts.rows else 0.0
    severity, threshold = policy.duplicate_ids.judge(share)
    return CheckResult(
        name="duplicate_ids",
        severity=severity,
        message=f"{facts.duplicate_ids} rows repeat an earlier value of id column {facts.id_column!r}",
        observed=share,
        threshold=threshold,
        examples=facts.duplicate_id_examples,
    )


@check
def outliers(facts: TableFacts, previous: Previous | None, policy: CheckPolicy) -> CheckResult:
    del previous
    rates = {n: c.outliers / (c.rows - c.missing) for n, c in facts.columns.items() if c.outliers}
    worst = max(rates.values(), default=0.0)
    severity, threshold = policy.outlier_rate.judge(worst)
    fences = f"outside q1 - {policy.iqr_factor:g}*IQR .. q3 + {policy.iqr_factor:g}*IQR"
    if rates:
        name = max(rates, key=rates.__getitem__)
        column: ColumnFacts = facts.columns[name]
        message = (
            f"{len(rates)} numeric columns have values {fences}; most in {name!r}: {column.outliers} ({_pct(worst)})"
        )
        examples = column.outlier_examples
    else:
        message, examples = f"no numeric value {fences}", []
    return CheckResult(
        name="outliers",
        severity=severity,
        message=message,
        observed=worst,
        threshold=threshold,
        columns=_worst(rates),
        examples=examples,
    )


@check
def constant_columns(facts: TableFacts, previous: Previous | None, policy: CheckPolicy) -> CheckResult:
    del previous
    constant = sorted(n for n, c in facts.columns.items() if c.distinct <= 1)
    if facts.target in constant:
        message = f"target {facts.target!r} has a single value: nothing to learn"
        return CheckResult(name="constant_columns", severity="error", message=message, observed=len(constant))
    severity: Severity = policy.constant_columns if constant else "info"
    message = f"columns with a single value (no signal): {constant[:WORST]}" if constant else "no constant column"
    return CheckResult(name="constant_columns", severity=severity, message=message, observed=len(constant))


@check
def label_balance(facts: TableFacts, previous: Previous | None, policy: CheckPolicy) -> CheckResult | None:
    """Label shares vs the previous version: total variation distance (50/50 -> 70/30 is 0.2)."""
    if previous is None:
        return None
    if facts.labels is None or previous.labels is None:
        message = f"target {facts.target!r} is continuous here or in version {previous.version}: shares not compared"
        return CheckResult(name="label_balance", severity="info", message=message)
    distance = total_variation(facts.labels, previous.labels)
    severity, threshold = policy.label_shift.judge(distance)
    now, before = sum(facts.labels.values()), sum(previous.labels.values())
    shares = ", ".join(
        f"{k}: {previous.labels.get(k, 0) / before:.0%} -> {facts.labels.get(k, 0) / now:.0%}"
        for k in sorted(set(facts.labels) | set(previous.labels))[:10]
    )
    return CheckResult(
        name="label_balance",
        severity=severity,
        message=f"label shares vs version {previous.version}: {shares} (distance {distance:.3f})",
        observed=distance,
        threshold=threshold,
        columns={k: v / now for k, v in facts.labels.items()},
    )


@check
def split_comparison(facts: TableFacts, previous: Previous | None, policy: CheckPolicy) -> CheckResult:
    """The trainer's split (same share, seed and time order) gives training and held-out rows alike."""
    del previous
    train_rows, held_rows = facts.split_rows
    if not train_rows or not held_rows:
        message = f"{train_rows} training and {held_rows} held-out rows: too few labelled rows to split"
        return CheckResult(name="split_comparison", severity="error", message=message, observed=0)
    findings: list[tuple[Severity, float | None, str]] = []
    label_distance = 0.0
    if facts.split_labels is not None:
        label_distance = total_variation(*facts.split_labels)
        severity, threshold = policy.split_label_difference.judge(label_distance)
        findings.append((severity, threshold, f"label shares differ by {label_distance:.3f} (TVD)"))
    differences = {
        n: c.split_difference
        for n, c in facts.columns.items()
        if c.split_difference is not None and n not in (facts.target, facts.time.column if facts.time else None)
    }
    worst = max(differences.values(), default=0.0)
    severity, threshold = policy.split_feature_difference.judge(worst)
    if differences:
        name = max(differences, key=differences.__getitem__)
        findings.append((severity, threshold, f"most different feature {name!r}: {facts.columns[name].split_detail}"))
    order: dict[Severity, int] = {"error": 0, "warning": 1, "info": 2}
    decided = min(findings, key=lambda f: order[f[0]], default=("info", None, ""))
    message = f"{facts.split_how}: {train_rows} training, {held_rows} held-out rows; " + "; ".join(
        f[2] for f in findings
    )
    return CheckResult(
        name="split_comparison",
        severity=decided[0],
        message=message,
        observed=max(label_distance, worst),
        threshold=decided[1],
        columns=_worst(differences),
    )


@check
def time_column(facts: TableFacts, previous: Previous | None, policy: CheckPolicy) -> CheckResult | None:
    del previous
    if facts.time is None:
        return None
    time = facts.time
    if not time.parseable:
        message = f"time column {time.column!r} holds values that are neither numbers nor ISO-8601 times"
        return CheckResult(name="time_column", severity="error", message=message)
    if time.unsorted_at is not None:
        message = f"time column {time.column!r} is not sorted: row {time.unsorted_at} is earlier than the row before"
        return CheckResult(
            name="time_column", severity=policy.unsorted_time, message=message, examples=[time.unsorted_at]
        )
    message = f"time column {time.column!r} is parseable and sorted" + (
        f"; {time.missing} rows without a time (the trainer counts them as the oldest)" if time.missing else ""
    )
    return CheckResult(name="time_column", severity="info", message=message, observed=time.missing)
