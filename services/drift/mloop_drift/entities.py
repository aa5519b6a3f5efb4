"""Drift's records as they leave its store and its API."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict

from mloop_common.profile import ReferenceProfile
from mloop_drift.cooldown import CooldownState
from mloop_drift.detector import Action, Cause


class MonitoredVersion(BaseModel):
    """A promoted model version: its windows are judged against its reference profile until it is retired."""

    model: str
    version: int
    task: Literal["classification", "regression"]
    target: str
    features: list[str]
    profile: ReferenceProfile
    baseline: dict[str, float]
    window_size: int
    cooldown_windows: int
    next_window: int = 1
    cooldown: CooldownState = CooldownState()
    retired: bool = False
    promoted_at: datetime | None = None


class Prediction(BaseModel):
    """One logged prediction, as drift records it."""

    request_id: str
    logged_at: datetime
    inputs: dict[str, Any]
    prediction: Any
    probabilities: list[float] | None = None


class Label(BaseModel):
    """The ground truth for one earlier (or not yet seen) prediction."""

    request_id: str
    label: Any
    labelled_at: datetime


class Observation(BaseModel):
    """A prediction and, once feedback arrived, its label; a label may also arrive before its prediction."""

    model_config = ConfigDict(from_attributes=True)

    request_id: str
    model: str
    version: int | None = None
    logged_at: datetime | None = None
    inputs: dict[str, Any] | None = None
    prediction: Any = None
    probabilities: list[float] | None = None
    label: Any = None
    labelled_at: datetime | None = None
    window_index: int | None = None


class OpenWindow(NamedTuple):
    """A version's predictions not yet in a window, and how many of the oldest window's worth are labelled."""

    total: int
    labelled: int


class ReportSummary(BaseModel):
    """The verdict on one window, without its evidence."""

    model_config = ConfigDict(from_attributes=True)

    id: str
    model: str
    version: int
    window_index: int
    drift_detected: bool
    cause: Cause | None
    action: Action | None
    emitted: bool
    summary: str
    created_at: datetime | None = None


class Report(ReportSummary):
    """The verdict on one window with its evidence: per-feature tests, data quality, performance."""

    report: dict[str, Any]


class ReportList(BaseModel):
    reports: list[ReportSummary]
