"""Drift's records as they leave its store and its API."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from mloop_common.profile import ReferenceProfile
from mloop_common.spec import DriftPolicy
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
    # The version's spec: drift policy, primary metric (judged when measurable) and time column.
    policy: DriftPolicy = Field(default_factory=DriftPolicy)
    metric: str | None = None
    time_column: str | None = None
    next_window: int = 1
    # Count windows: predictions already in window next_window (placed on arrival, judged once it is full).
    window_fill: int = 0
    cooldown: CooldownState = CooldownState()
    retired: bool = False
    promoted_at: datetime | None = None
    retrain_requested_at: datetime | None = None  # a retrain this version asked for, not decided yet


class Prediction(BaseModel):
    """One logged prediction, as drift records it."""

    request_id: str
    logged_at: datetime
    inputs: dict[str, Any]
    prediction: Any
    probabilities: list[float] | None = None
    # When the predicted event happened: the spec's time column in the request, else logged_at.
    event_time: datetime | None = None
    window_index: int | None = None  # placed on arrival in a count window of a watched version


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
    event_time: datetime | None = None


class ReportSummary(BaseModel):
    """One revision of the verdict on one window, without its evidence.

    A window is judged when it fills up; labels that arrive later revise it: a changed verdict (or
    performance newly judged from labels instead of an estimate) is a new revision, anything else
    refreshes the latest one (`updated_at`).
    """

    model_config = ConfigDict(from_attributes=True)

    id: str
    model: str
    version: int
    window_index: int
    revision: int = 1
    drift_detected: bool
    cause: Cause | None
    action: Action | None
    emitted: bool
    # Why an alarm the verdict calls for was not sent: "cooldown", "labels" (too few labelled rows to retrain
    # on), "retrain_in_flight" or "hysteresis" (what calls for it raised a retrain and has not cleared since).
    held_for: str | None = None
    # What the performance verdict rests on: "actual" (labels), "estimated" (CBPE) or None.
    basis: str | None = None
    label_coverage: float | None = None
    summary: str
    created_at: datetime | None = None
    updated_at: datetime | None = None


class Revision(BaseModel):
    """One entry of a window's verdict history."""

    model_config = ConfigDict(from_attributes=True)

    id: str
    revision: int
    cause: Cause | None
    action: Action | None
    emitted: bool
    basis: str | None = None
    label_coverage: float | None = None
    created_at: datetime | None = None


class Report(ReportSummary):
    """One revision of a window's verdict with its evidence, and the window's revisions, oldest first."""

    report: dict[str, Any]
    revisions: list[Revision] = Field(default_factory=list)


class ReportList(BaseModel):
    reports: list[ReportSummary]
