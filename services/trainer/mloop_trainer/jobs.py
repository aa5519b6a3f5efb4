"""The training job that runs in a worker process: bytes in, bytes and numbers out.

It runs off the event loop (in a process pool) so the Kafka consumer keeps heartbeating.
"""

from __future__ import annotations

import io
import json
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from mloop_common.evaluation import compute_metrics
from mloop_common.modelio import dump_model
from mloop_common.profile import build_reference_profile, evaluation_set
from mloop_common.spec import ModelSpec
from mloop_trainer.entities import FitReport
from mloop_trainer.training import TrainingError, train
from mloop_trainer.workers import report_progress


@dataclass(frozen=True)
class JobOutput:
    """What a training job hands back to the service: three artifacts as bytes and the facts of the fit."""

    model: bytes  # the fitted pipeline, skops
    profile: bytes  # ReferenceProfile.to_json() of the training rows, for drift
    holdout: bytes  # the held-out rows, Parquet, for the validator
    report: FitReport


def combine_with_recent(frame: pd.DataFrame, recent: pd.DataFrame, spec: ModelSpec) -> pd.DataFrame:
    """Append labelled production rows to the dataset's newest rows; they count as the newest rows.

    ``spec.retrain.history_rows`` limits how much history is kept. Only the dataset's columns
    are kept. Without a time column in the recent rows they are placed after every historical
    row, in the order they were logged.
    """
    if spec.target not in recent.columns:
        raise TrainingError(f"recent data has no target column {spec.target!r}")
    recent = recent[recent[spec.target].notna()].copy()
    history_rows = spec.retrain.history_rows
    if history_rows is not None:
        if spec.time_column and spec.time_column in frame.columns:
            frame = frame.sort_values(spec.time_column, kind="stable")
        frame = frame.iloc[len(frame) - min(history_rows, len(frame)) :]
    if spec.time_column and spec.time_column in frame.columns:
        column = spec.time_column
        if column not in recent.columns or recent[column].isna().any():
            last = frame[column].max()
            numeric = pd.api.types.is_numeric_dtype(frame[column])
            if pd.isna(last):  # no history kept: the recent rows are the whole timeline
                last = 0 if numeric else pd.Timestamp(0, tz=getattr(frame[column].dtype, "tz", None))
            if numeric:
                recent[column] = last + np.arange(1, len(recent) + 1)
            else:
                recent[column] = pd.Timestamp(last) + pd.to_timedelta(np.arange(1, len(recent) + 1), unit="s")
    for column in frame.columns:
        if column not in recent.columns:
            recent[column] = np.nan
    recent = recent[list(frame.columns)].astype(frame.dtypes.to_dict(), errors="ignore")
    return pd.concat([frame, recent], ignore_index=True)


def _plain(value: Any) -> Any:
    """numpy scalars and arrays as plain JSON-able Python values."""
    return json.loads(json.dumps(value, default=lambda v: v.tolist() if hasattr(v, "tolist") else str(v)))


def _parquet(frame: pd.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    return buffer.getvalue()


def run_training_job(spec_body: dict[str, Any], dataset: bytes, recent: bytes | None) -> JobOutput:
    """Train the spec on the dataset (plus recent production rows); return artifacts and records."""
    started = time.perf_counter()
    spec = ModelSpec.model_validate(spec_body)
    frame = pd.read_parquet(io.BytesIO(dataset))
    recent_rows = 0
    if recent is not None:
        recent_frame = pd.read_parquet(io.BytesIO(recent))
        frame = combine_with_recent(frame, recent_frame, spec)
        recent_rows = len(recent_frame)
    result = train(spec, frame, progress=report_progress)
    features = result.features
    train_predictions = result.model.predict(result.train[features])
    profile = build_reference_profile(
        result.train, features, predictions=train_predictions, seed=spec.seed, task=spec.task
    )
    holdout_x, holdout_y = result.holdout[features], result.holdout[spec.target]
    probabilities = (
        result.model.predict_proba(holdout_x)
        if spec.task == "classification" and hasattr(result.model, "predict_proba")
        else None
    )
    if probabilities is not None and result.classes is not None:
        # Drift calibrates its label-free performance estimate on the held-out probabilities.
        evaluation = evaluation_set(result.classes, holdout_y.to_numpy(), probabilities, seed=spec.seed)
        profile = profile.model_copy(update={"evaluation": evaluation})
    holdout_metrics = compute_metrics(
        spec.task, holdout_y, result.model.predict(holdout_x), probabilities, classes=result.classes
    )
    report = FitReport(
        features=features,
        estimator_class=result.estimator_class,
        params=_plain(result.best_params),
        cv_score=float(result.cv_score),
        candidates=_plain(result.candidates),
        holdout_metrics=_plain(holdout_metrics),
        train_rows=int(result.train_rows),
        holdout_rows=len(result.holdout),
        recent_rows=recent_rows,
        timings={**result.timings, "job_s": time.perf_counter() - started},
        library_versions=_plain(result.library_versions),
    )
    return JobOutput(
        model=dump_model(result.model), profile=profile.to_json(), holdout=_parquet(result.holdout), report=report
    )


def warm_up() -> None:
    """Run in each new worker once, so the first real job does not pay for imports."""
