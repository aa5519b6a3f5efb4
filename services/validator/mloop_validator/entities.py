"""The validator's records as they leave its store and its API."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

# Per slice column, per value: {"rows": n, "value": primary metric or None}.
SliceMetrics = dict[str, dict[str, dict[str, Any]]]


class SlicePair(BaseModel):
    candidate: SliceMetrics
    champion: SliceMetrics | None = None


class CheckResult(BaseModel):
    """One rule of the release gate applied to the candidate."""

    name: str  # e.g. improvement.roc_auc, floor.accuracy, slice.plan=pro, flip_rate, calibration, infra
    passed: bool
    message: str
    value: float | None = None
    bound: float | None = None


class Evaluation(BaseModel):
    """One training run's candidate judged against the champion on the same held-out rows.

    The verdict is stored before anything is registered or announced (``settled_at`` unset); a
    replay of the run's event reuses it, then registers or announces and settles it.
    """

    model_config = ConfigDict(from_attributes=True)

    id: str
    model: str
    run_id: str
    decision: Literal["registered", "rejected"]
    reasons: list[str]
    metric: str
    candidate_metrics: dict[str, float]
    champion_version: int | None
    champion_metrics: dict[str, float] | None
    slices: SlicePair
    registered_version: int | None
    holdout_rows: int
    checks: list[CheckResult] = []
    # The candidate's robustness, calibration, fairness, latency, size and clean-process load.
    report: dict[str, Any] = {}
    created_at: datetime | None = None
    settled_at: datetime | None = None  # when its registration or rejection was done

    @property
    def failed_checks(self) -> list[CheckResult]:
        return [check for check in self.checks if not check.passed]


class DatasetVersion(BaseModel):
    """A published dataset version as data.published announced it: where its snapshot is, for pinned evaluations."""

    model_config = ConfigDict(from_attributes=True)

    name: str
    version: int
    snapshot_uri: str
    snapshot_sha256: str
    rows: int
    target: str


class EvaluationList(BaseModel):
    evaluations: list[Evaluation]
