"""Training as a pure function of (spec, data): split, search every candidate estimator, refit the best."""

from __future__ import annotations

import json
import math
import platform
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import scipy
import sklearn
import skops
from sklearn.base import BaseEstimator
from sklearn.compose import ColumnTransformer
from sklearn.experimental import enable_halving_search_cv  # noqa: F401  (makes HalvingGridSearchCV importable)
from sklearn.impute import SimpleImputer
from sklearn.metrics import check_scoring, f1_score, make_scorer
from sklearn.model_selection import (
    GridSearchCV,
    HalvingGridSearchCV,
    KFold,
    ParameterGrid,
    RandomizedSearchCV,
    StratifiedKFold,
    TimeSeriesSplit,
    train_test_split,
)
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler

from mloop_common.errors import PermanentError
from mloop_common.modelio import as_category_strings, estimator_class
from mloop_common.profile import feature_kind
from mloop_common.spec import ESTIMATOR_ALLOWLIST, ModelSpec, metric_higher_is_better


@dataclass(frozen=True)
class SearchProgress:
    """How far a run is: parameter combinations tried out of those planned, and what it does now."""

    trials_done: int
    trials_total: int
    stage: str  # e.g. "RandomForestClassifier: searching 6 parameter combination(s)", "refitting ..."


Progress = Callable[[SearchProgress], None]

_MAX_WARNINGS = 20


class TrainingError(PermanentError):
    """The data or spec cannot produce a model (missing columns, empty split, every fit failed)."""


@dataclass
class TrainingResult:
    """A fitted model and everything a run record needs to explain it."""

    model: Pipeline
    estimator_class: str
    best_params: dict[str, Any]
    cv_score: float
    metric: str
    candidates: list[dict[str, Any]]
    features: list[str]
    train_rows: int
    train: pd.DataFrame
    holdout: pd.DataFrame
    timings: dict[str, float]
    library_versions: dict[str, str]
    classes: list[Any] | None = None
    warnings: list[str] = field(default_factory=list)


def library_versions() -> dict[str, str]:
    """Versions of the libraries a model artifact depends on."""
    return {
        "python": platform.python_version(),
        "sklearn": sklearn.__version__,
        "numpy": np.__version__,
        "pandas": pd.__version__,
        "scipy": scipy.__version__,
        "skops": skops.__version__,
    }


def split_holdout(frame: pd.DataFrame, spec: ModelSpec) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Deterministically split into (train, holdout); with a time column the newest rows are held out."""
    if spec.target not in frame.columns:
        raise TrainingError(f"target column {spec.target!r} is not in the data")
    labelled = frame[frame[spec.target].notna()]
    if labelled.empty:
        raise TrainingError(f"target column {spec.target!r} has no values")
    if spec.time_column is not None:
        if spec.time_column not in frame.columns:
            raise TrainingError(f"time_column {spec.time_column!r} is not in the data")
        order = _time_order(labelled[spec.time_column])
        ordered = labelled.iloc[order]
        n_holdout = max(1, round(len(ordered) * spec.holdout))
        train, holdout = ordered.iloc[: len(ordered) - n_holdout], ordered.iloc[len(ordered) - n_holdout :]
    else:
        train, holdout = _shuffled_split(labelled, spec)
    if train.empty or holdout.empty:
        raise TrainingError(f"{len(labelled)} labelled rows are too few to hold out {spec.holdout:.0%} and still train")
    return train.reset_index(drop=True), holdout.reset_index(drop=True)


def _time_order(times: pd.Series) -> np.ndarray:
    """Positions that sort rows by time, stable; rows without a time count as oldest."""
    if pd.api.types.is_object_dtype(times) or pd.api.types.is_string_dtype(times):
        try:
            times = pd.to_datetime(times, utc=True, format="ISO8601")
        except (ValueError, TypeError):
            pass  # not timestamps: order by the raw values
    positions = np.arange(len(times))
    keyed = pd.DataFrame({"time": times.to_numpy(), "position": positions})
    return keyed.sort_values("time", kind="stable", na_position="first")["position"].to_numpy()


def _shuffled_split(frame: pd.DataFrame, spec: ModelSpec) -> tuple[pd.DataFrame, pd.DataFrame]:
    if len(frame) < 2:
        return frame, frame.iloc[0:0]
    stratify = None
    if spec.task == "classification":
        counts = frame[spec.target].value_counts()
        n_holdout = math.ceil(len(frame) * spec.holdout)
        # Stratifying needs two rows per class and room for every class on each side.
        if counts.min() >= 2 and len(counts) <= min(n_holdout, len(frame) - n_holdout):
            stratify = frame[spec.target]
    train, holdout = train_test_split(
        frame, test_size=spec.holdout, random_state=spec.seed, shuffle=True, stratify=stratify
    )
    return train, holdout


def resolve_features(frame: pd.DataFrame, spec: ModelSpec) -> list[str]:
    """The feature columns: the spec's list, or every column but the target and time column."""
    if spec.features is not None:
        missing = [f for f in spec.features if f not in frame.columns]
        if missing:
            raise TrainingError(f"feature column(s) not in the data: {', '.join(missing)}")
        return list(spec.features)
    features = [str(c) for c in frame.columns if c not in (spec.target, spec.time_column)]
    if not features:
        raise TrainingError("the data has no feature columns besides the target and time column")
    return features


# Histogram gradient boosting bins numbers by their quantiles (scaling cannot change a split) and routes
# missing values itself: imputing and scaling for it only costs time in every fold of a search.
NUMBERS_AS_THEY_ARE = frozenset({"HistGradientBoostingClassifier", "HistGradientBoostingRegressor"})


def build_pipeline(estimator: BaseEstimator, frame: pd.DataFrame, features: list[str]) -> Pipeline:
    """Impute and scale numbers (as they are for estimators that need neither), one-hot encode categories,
    then the estimator (step "model")."""
    numeric = [f for f in features if feature_kind(frame[f]) == "numeric"]
    categorical = [f for f in features if f not in numeric]
    transformers: list[tuple[str, Any, list[str]]] = []
    if numeric:
        numbers: Any = (
            "passthrough"
            if type(estimator).__name__ in NUMBERS_AS_THEY_ARE
            else Pipeline([("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())])
        )
        transformers.append(("numeric", numbers, numeric))
    if categorical:
        transformers.append(
            (
                "categorical",
                Pipeline(
                    [
                        ("text", FunctionTransformer(as_category_strings, feature_names_out="one-to-one")),
                        ("impute", SimpleImputer(strategy="most_frequent")),
                        ("onehot", OneHotEncoder(handle_unknown="ignore", sparse_output=False)),
                    ]
                ),
                categorical,
            )
        )
    preprocess = ColumnTransformer(transformers, remainder="drop", sparse_threshold=0.0)
    return Pipeline([("preprocess", preprocess), ("model", estimator)])


def _scorer(metric: str, classes: np.ndarray | None) -> Any:
    """The sklearn scoring for a spec metric, defined as in mloop_common.evaluation."""
    multiclass = classes is not None and len(classes) > 2
    if metric == "f1" and classes is not None:
        if multiclass:
            return "f1_weighted"
        return make_scorer(f1_score, pos_label=classes[-1], zero_division=0)
    return {
        "accuracy": "accuracy",
        "balanced_accuracy": "balanced_accuracy",
        "roc_auc": "roc_auc_ovr_weighted" if multiclass else "roc_auc",
        "log_loss": "neg_log_loss",
        "rmse": "neg_root_mean_squared_error",
        "mae": "neg_mean_absolute_error",
        "r2": "r2",
    }[metric]


def _natural(metric: str, score: float) -> float:
    """Undo sklearn's negation of lower-is-better scores."""
    return score if metric_higher_is_better(metric) else -score


def _cv_splitter(spec: ModelSpec, y: pd.Series) -> Any:
    if spec.time_column is not None:
        return TimeSeriesSplit(n_splits=spec.search.cv)
    if spec.task == "classification" and y.value_counts().min() >= spec.search.cv:
        return StratifiedKFold(n_splits=spec.search.cv, shuffle=True, random_state=spec.seed)
    return KFold(n_splits=spec.search.cv, shuffle=True, random_state=spec.seed)


class _CountingScorer:
    """A scorer that counts its calls: one per fitted fold, which is how far a search has got.

    Counted in this process only: with ``n_jobs > 1`` the folds score in joblib's workers and progress
    moves per estimator instead.
    """

    def __init__(self, scorer: Any, on_score: Callable[[], None]) -> None:
        self.scorer = scorer
        self.on_score = on_score

    def __call__(self, estimator: Any, X: Any, y: Any) -> float:
        score = self.scorer(estimator, X, y)
        self.on_score()
        return float(score)


def planned_trials(spec: ModelSpec, grid: dict[str, list[Any]]) -> int:
    """Parameter combinations a search tries at least once (halving tries every one in its first round)."""
    combinations = len(ParameterGrid(grid))
    return min(spec.search.n_iter, combinations) if spec.search.strategy == "random" else combinations


def _search(spec: ModelSpec, pipeline: Pipeline, grid: dict[str, list[Any]], scoring: Any, cv: Any, n_jobs: int) -> Any:
    common = {
        "scoring": scoring,
        "cv": cv,
        "n_jobs": n_jobs,
        "refit": False,
        "error_score": np.nan,
        "return_train_score": False,
    }
    if spec.search.strategy == "random":
        n_iter = min(spec.search.n_iter, len(ParameterGrid(grid)))
        return RandomizedSearchCV(pipeline, grid, n_iter=n_iter, random_state=spec.seed, **common)
    if spec.search.strategy == "halving":
        return HalvingGridSearchCV(pipeline, grid, random_state=spec.seed, **common)
    return GridSearchCV(pipeline, grid, **common)


def _last_line(exc: Exception) -> str:
    """The most specific line of an error; sklearn puts the underlying fit error last."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[-1] if lines else type(exc).__name__


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _candidates(name: str, search: Any, metric: str) -> list[dict[str, Any]]:
    """One entry per parameter combination.

    For halving, each combination's result at the last round it reached, with that
    round's training rows ("n_resources"), since early rounds score on fewer rows.
    """
    results = search.cv_results_
    n_resources = results.get("n_resources")
    by_params: dict[str, dict[str, Any]] = {}
    for index, params in enumerate(results["params"]):
        mean, std = results["mean_test_score"][index], results["std_test_score"][index]
        plain = {key.removeprefix("model__"): _plain(v) for key, v in params.items()}
        failed = not math.isfinite(mean)
        entry = {
            "class": name,
            "params": plain,
            "mean_score": None if failed else _natural(metric, float(mean)),
            "std_score": None if failed else float(std),
        }
        if n_resources is not None:
            entry["n_resources"] = int(n_resources[index])
        by_params[json.dumps(plain, sort_keys=True, default=str)] = entry
    return list(by_params.values())


def _grid(spec: ModelSpec, estimator_spec: Any) -> dict[str, list[Any]]:
    grid = {f"model__{k}": list(v) for k, v in estimator_spec.params.items()}
    if (
        "random_state" in ESTIMATOR_ALLOWLIST[estimator_spec.class_].params
        and "random_state" not in estimator_spec.params
    ):
        grid["model__random_state"] = [spec.seed]
    return grid


def train(spec: ModelSpec, frame: pd.DataFrame, n_jobs: int = 1, progress: Progress | None = None) -> TrainingResult:
    """Split, search every candidate estimator with CV on the training part, refit the best on all of it."""
    report = progress or (lambda _progress: None)
    started = time.perf_counter()
    features = resolve_features(frame, spec)
    train_part, holdout = split_holdout(frame, spec)
    if len(train_part) <= spec.search.cv:
        raise TrainingError(f"{len(train_part)} training rows are too few for {spec.search.cv}-fold CV")
    X, y = train_part[features], train_part[spec.target]
    classes = np.unique(y) if spec.task == "classification" else None
    if classes is not None and len(classes) < 2:
        raise TrainingError(f"the training data has a single class ({classes[0]!r}); need at least two")
    scoring = _scorer(spec.metric, classes)
    cv = _cv_splitter(spec, y)
    higher_is_better = metric_higher_is_better(spec.metric)

    search_started = time.perf_counter()
    candidates: list[dict[str, Any]] = []
    best: tuple[float, str, dict[str, Any]] | None = None
    caught: list[str] = []
    grids = [_grid(spec, estimator_spec) for estimator_spec in spec.estimators]
    total = sum(planned_trials(spec, grid) for grid in grids)
    folds = cv.get_n_splits()
    finished = 0  # trials of the estimators searched so far
    with warnings.catch_warnings(record=True) as recorded:
        warnings.simplefilter("always")
        for estimator_spec, grid in zip(spec.estimators, grids, strict=True):
            name = estimator_spec.class_
            estimator = estimator_class(name)()
            pipeline = build_pipeline(estimator, X, features)
            planned = planned_trials(spec, grid)
            stage = f"{name}: searching {planned} parameter combination(s)"
            report(SearchProgress(finished, total, stage))
            fits = 0

            def scored(name_stage: str = stage, base: int = finished, planned: int = planned) -> None:
                nonlocal fits
                fits += 1
                if fits % folds == 0:
                    report(SearchProgress(base + min(fits // folds, planned), total, name_stage))

            t0 = time.perf_counter()
            try:
                counting = _CountingScorer(check_scoring(pipeline, scoring=scoring), scored)
                search = _search(spec, pipeline, grid, counting, cv, n_jobs).fit(X, y)
            except ValueError as exc:
                # Every fit of this estimator failed; the others may still succeed.
                candidates.append(
                    {
                        "class": name,
                        "params": estimator_spec.params,
                        "mean_score": None,
                        "std_score": None,
                        "error": _last_line(exc),
                    }
                )
                finished += planned
                report(SearchProgress(finished, total, f"{name}: failed ({candidates[-1]['error']})"))
                continue
            tried = _candidates(name, search, spec.metric)
            candidates.extend(tried)
            score = _natural(spec.metric, float(search.best_score_))
            params = {k.removeprefix("model__"): _plain(v) for k, v in search.best_params_.items()}
            finished += planned
            elapsed = time.perf_counter() - t0
            report(SearchProgress(finished, total, f"{name}: best {spec.metric}={score:.4f} in {elapsed:.1f}s"))
            if math.isfinite(score) and (best is None or (score > best[0] if higher_is_better else score < best[0])):
                best = (score, name, params)
        search_s = time.perf_counter() - search_started
        if best is None:
            errors = "; ".join(f"{c['class']}: {c.get('error', 'no valid score')}" for c in candidates)
            raise TrainingError(f"no candidate estimator could be fitted ({errors})")
        cv_score, best_class, best_params = best
        report(SearchProgress(total, total, f"refitting {best_class} on {len(train_part)} rows"))
        t0 = time.perf_counter()
        model = build_pipeline(estimator_class(best_class)(), X, features)
        model.set_params(**{f"model__{k}": v for k, v in best_params.items()})
        model.fit(X, y)
        refit_s = time.perf_counter() - t0
    for warning in recorded:
        message = f"{warning.category.__name__}: {str(warning.message).strip().splitlines()[0]}"
        if message not in caught and len(caught) < _MAX_WARNINGS:
            caught.append(message)

    return TrainingResult(
        model=model,
        estimator_class=best_class,
        best_params=best_params,
        cv_score=cv_score,
        metric=spec.metric,
        candidates=candidates,
        features=features,
        train_rows=len(train_part),
        train=train_part,
        holdout=holdout,
        timings={"search_s": search_s, "refit_s": refit_s, "total_s": time.perf_counter() - started},
        library_versions=library_versions(),
        classes=[_plain(c) for c in model.classes_] if spec.task == "classification" else None,
        warnings=caught,
    )
