"""The trainer's records as they leave its store and its API."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from mloop_common.events import ArtifactPointer

RunStatus = Literal["succeeded", "failed"]
Trigger = Literal["data.published", "drift.detected", "spec.changed"]


class DatasetRef(BaseModel):
    """A published dataset version: the snapshot a drift-triggered retraining starts from."""

    model_config = ConfigDict(from_attributes=True, frozen=True)

    name: str
    version: int
    snapshot_uri: str
    snapshot_sha256: str
    target: str
    time_column: str | None = None
    contract_uri: str | None = None  # the version's schema contract (ingest); None before contracts existed
    contract_sha256: str | None = None


class FitReport(BaseModel):
    """What a training job found, in plain JSON: the winning candidate, every candidate tried, holdout metrics."""

    features: list[str]
    estimator_class: str
    params: dict[str, Any]
    cv_score: float
    candidates: list[dict[str, Any]]  # class, params, mean_score, std_score, and error or n_resources
    holdout_metrics: dict[str, float]
    train_rows: int
    holdout_rows: int
    recent_rows: int
    timings: dict[str, float]  # search_s, refit_s, total_s, job_s
    library_versions: dict[str, str]


# Why a run failed: the data or spec could not train ("data"), the spec is beyond the trainer's limits,
# the run outgrew its memory or time budget, or its worker process died (most often the OOM killer).
Failure = Literal["data", "limits", "over_budget", "worker_died", "job_failed"]


class FailedDetails(BaseModel):
    """A failed run's details: what it was asked to do and the kind of failure (its ``error`` says more)."""

    seed: int
    failure: Failure | None = None  # None: recorded before failures had kinds


class TrainedDetails(FitReport):
    """A succeeded run's details: the fit, its seed, and the artifacts it stored."""

    seed: int
    artifact: ArtifactPointer
    profile: ArtifactPointer
    holdout: ArtifactPointer


class RunRecord(BaseModel):
    """What every view of a finished run shows: its outcome, its trigger and every version it depends on."""

    model_config = ConfigDict(from_attributes=True)

    run_id: str
    model: str
    status: RunStatus
    trigger: Trigger
    trigger_event_id: str
    spec_version: int
    spec_digest: str
    dataset: str
    dataset_version: int
    dataset_sha256: str
    recent_data_sha256: str | None = None
    dataset_uri: str | None = None  # None: recorded before the inputs' locations were kept
    recent_data_uri: str | None = None
    error: str | None = None
    code_version: str
    started_at: datetime
    finished_at: datetime


class Run(RunRecord):
    """One training run of one model spec, with everything needed to explain and reproduce it."""

    # Tried in order: the shape of a failed run's details is a subset of a succeeded one's.
    details: TrainedDetails | FailedDetails = Field(union_mode="left_to_right")

    def summary(self) -> RunSummary:
        trained = self.details if isinstance(self.details, TrainedDetails) else None
        return RunSummary(
            **self.model_dump(exclude={"details"}),
            estimator_class=trained.estimator_class if trained else None,
            cv_score=trained.cv_score if trained else None,
            holdout_metrics=trained.holdout_metrics if trained else None,
        )


class RunSummary(RunRecord):
    """A run in a list: its details cut down to the winning estimator and its scores."""

    estimator_class: str | None
    cv_score: float | None
    holdout_metrics: dict[str, float] | None


class ActiveRun(BaseModel):
    """A run being fitted right now, and how far it is."""

    run_id: str
    model: str
    status: Literal["training"] = "training"
    trigger: Trigger
    spec_version: int
    dataset: str
    dataset_version: int
    started_at: datetime
    trials_done: int = 0  # parameter combinations tried so far
    trials_total: int | None = None  # known once the job has started
    stage: str = "waiting for a training worker"


class RunList(BaseModel):
    runs: list[RunSummary]
    training: list[ActiveRun]
