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


class Evaluation(BaseModel):
    """One training run's candidate judged against the champion on the same held-out rows."""

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
    created_at: datetime | None = None


class EvaluationList(BaseModel):
    evaluations: list[Evaluation]
