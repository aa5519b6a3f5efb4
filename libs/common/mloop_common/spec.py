"""The model spec: what a data scientist declares about a model, validated at the edge.

The registry stores it, the trainer fits it, the validator and the drift service read
its promotion and drift policies. Everything a spec may name (estimators, their
parameters, metrics) is checked here, so a bad spec fails on submission with a message
naming the field rather than hours later inside a training run.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from mloop_common.errors import InvalidInput

Task = Literal["classification", "regression"]

NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"


@dataclass(frozen=True)
class Estimator:
    """An allowlisted scikit-learn estimator: its task, import path and constructor parameters.

    The parameter names are listed here (not read from scikit-learn) so that specs validate without
    importing it; a test in mloop_common compares them with the installed scikit-learn.
    """

    task: Task
    path: str
    params: frozenset[str]


ESTIMATOR_ALLOWLIST: dict[str, Estimator] = {
    "LogisticRegression": Estimator(
        "classification",
        "sklearn.linear_model.LogisticRegression",
        frozenset(
            (
                "C class_weight dual fit_intercept intercept_scaling l1_ratio max_iter n_jobs penalty "
                "random_state solver tol verbose warm_start"
            ).split()
        ),
    ),
    "RandomForestClassifier": Estimator(
        "classification",
        "sklearn.ensemble.RandomForestClassifier",
        frozenset(
            (
                "bootstrap ccp_alpha class_weight criterion max_depth max_features max_leaf_nodes max_samples "
                "min_impurity_decrease min_samples_leaf min_samples_split min_weight_fraction_leaf monotonic_cst "
                "n_estimators n_jobs oob_score random_state verbose warm_start"
            ).split()
        ),
    ),
    "HistGradientBoostingClassifier": Estimator(
        "classification",
        "sklearn.ensemble.HistGradientBoostingClassifier",
        frozenset(
            (
                "categorical_features class_weight early_stopping interaction_cst l2_regularization learning_rate "
                "loss max_bins max_depth max_features max_iter max_leaf_nodes min_samples_leaf monotonic_cst "
                "n_iter_no_change random_state scoring tol validation_fraction verbose warm_start"
            ).split()
        ),
    ),
    "GradientBoostingClassifier": Estimator(
        "classification",
        "sklearn.ensemble.GradientBoostingClassifier",
        frozenset(
            (
                "ccp_alpha criterion init learning_rate loss max_depth max_features max_leaf_nodes "
                "min_impurity_decrease min_samples_leaf min_samples_split min_weight_fraction_leaf n_estimators "
                "n_iter_no_change random_state subsample tol validation_fraction verbose warm_start"
            ).split()
        ),
    ),
    "ExtraTreesClassifier": Estimator(
        "classification",
        "sklearn.ensemble.ExtraTreesClassifier",
        frozenset(
            (
                "bootstrap ccp_alpha class_weight criterion max_depth max_features max_leaf_nodes max_samples "
                "min_impurity_decrease min_samples_leaf min_samples_split min_weight_fraction_leaf monotonic_cst "
                "n_estimators n_jobs oob_score random_state verbose warm_start"
            ).split()
        ),
    ),
    "DecisionTreeClassifier": Estimator(
        "classification",
        "sklearn.tree.DecisionTreeClassifier",
        frozenset(
            (
                "ccp_alpha class_weight criterion max_depth max_features max_leaf_nodes min_impurity_decrease "
                "min_samples_leaf min_samples_split min_weight_fraction_leaf monotonic_cst random_state splitter"
            ).split()
        ),
    ),
    "KNeighborsClassifier": Estimator(
        "classification",
        "sklearn.neighbors.KNeighborsClassifier",
        frozenset(("algorithm leaf_size metric metric_params n_jobs n_neighbors p weights").split()),
    ),
    "GaussianNB": Estimator(
        "classification",
        "sklearn.naive_bayes.GaussianNB",
        frozenset(("priors var_smoothing").split()),
    ),
    "LinearRegression": Estimator(
        "regression",
        "sklearn.linear_model.LinearRegression",
        frozenset(("copy_X fit_intercept n_jobs positive tol").split()),
    ),
    "Ridge": Estimator(
        "regression",
        "sklearn.linear_model.Ridge",
        frozenset(("alpha copy_X fit_intercept max_iter positive random_state solver tol").split()),
    ),
    "Lasso": Estimator(
        "regression",
        "sklearn.linear_model.Lasso",
        frozenset(
            ("alpha copy_X fit_intercept max_iter positive precompute random_state selection tol warm_start").split()
        ),
    ),
    "ElasticNet": Estimator(
        "regression",
        "sklearn.linear_model.ElasticNet",
        frozenset(
            (
                "alpha copy_X fit_intercept l1_ratio max_iter positive precompute random_state selection tol warm_start"
            ).split()
        ),
    ),
    "RandomForestRegressor": Estimator(
        "regression",
        "sklearn.ensemble.RandomForestRegressor",
        frozenset(
            (
                "bootstrap ccp_alpha criterion max_depth max_features max_leaf_nodes max_samples "
                "min_impurity_decrease min_samples_leaf min_samples_split min_weight_fraction_leaf monotonic_cst "
                "n_estimators n_jobs oob_score random_state verbose warm_start"
            ).split()
        ),
    ),
    "HistGradientBoostingRegressor": Estimator(
        "regression",
        "sklearn.ensemble.HistGradientBoostingRegressor",
        frozenset(
            (
                "categorical_features early_stopping interaction_cst l2_regularization learning_rate loss "
                "max_bins max_depth max_features max_iter max_leaf_nodes min_samples_leaf monotonic_cst "
                "n_iter_no_change quantile random_state scoring tol validation_fraction verbose warm_start"
            ).split()
        ),
    ),
    "GradientBoostingRegressor": Estimator(
        "regression",
        "sklearn.ensemble.GradientBoostingRegressor",
        frozenset(
            (
                "alpha ccp_alpha criterion init learning_rate loss max_depth max_features max_leaf_nodes "
                "min_impurity_decrease min_samples_leaf min_samples_split min_weight_fraction_leaf n_estimators "
                "n_iter_no_change random_state subsample tol validation_fraction verbose warm_start"
            ).split()
        ),
    ),
    "ExtraTreesRegressor": Estimator(
        "regression",
        "sklearn.ensemble.ExtraTreesRegressor",
        frozenset(
            (
                "bootstrap ccp_alpha criterion max_depth max_features max_leaf_nodes max_samples "
                "min_impurity_decrease min_samples_leaf min_samples_split min_weight_fraction_leaf monotonic_cst "
                "n_estimators n_jobs oob_score random_state verbose warm_start"
            ).split()
        ),
    ),
    "DecisionTreeRegressor": Estimator(
        "regression",
        "sklearn.tree.DecisionTreeRegressor",
        frozenset(
            (
                "ccp_alpha criterion max_depth max_features max_leaf_nodes min_impurity_decrease min_samples_leaf "
                "min_samples_split min_weight_fraction_leaf monotonic_cst random_state splitter"
            ).split()
        ),
    ),
    "KNeighborsRegressor": Estimator(
        "regression",
        "sklearn.neighbors.KNeighborsRegressor",
        frozenset(("algorithm leaf_size metric metric_params n_jobs n_neighbors p weights").split()),
    ),
}

# Metrics a spec may optimise (the trainer searches on them and drift re-measures them per window).
METRICS: dict[Task, tuple[str, ...]] = {
    "classification": ("accuracy", "balanced_accuracy", "f1", "roc_auc", "log_loss"),
    "regression": ("rmse", "mae", "r2"),
}
# Every metric the validator measures: what the release gate's floors and improvements may name.
GATE_METRICS: dict[Task, tuple[str, ...]] = {
    "classification": (*METRICS["classification"], "brier"),
    "regression": METRICS["regression"],
}

_LOWER_IS_BETTER = frozenset({"log_loss", "brier", "rmse", "mae"})

_JSON_TYPES = frozenset({"application/json", "text/json"})
_YAML_TYPES = frozenset({"application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml"})


class SpecError(InvalidInput):
    """A spec body that cannot be read as JSON or YAML at all."""

    def __init__(self, message: str) -> None:
        super().__init__(message, field="body")


def metric_higher_is_better(metric: str) -> bool:
    """True when a larger value of the metric means a better model."""
    if not any(metric in names for names in GATE_METRICS.values()):
        raise ValueError(f"unknown metric {metric!r}")
    return metric not in _LOWER_IS_BETTER


class EstimatorSpec(BaseModel):
    """One candidate estimator and its search space (each param maps to candidate values)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    class_: str = Field(alias="class")
    params: dict[str, list[Any]] = Field(default_factory=dict)

    @field_validator("class_")
    @classmethod
    def _known_class(cls, value: str) -> str:
        if value not in ESTIMATOR_ALLOWLIST:
            allowed = ", ".join(sorted(ESTIMATOR_ALLOWLIST))
            raise ValueError(f"estimator {value!r} is not in the allowlist ({allowed})")
        return value

    @field_validator("params", mode="before")
    @classmethod
    def _scalars_become_lists(cls, value: Any) -> Any:
        # A lone value (`C: 1.0`) is a one-point search space; accept it as users write it.
        if isinstance(value, dict):
            return {k: v if isinstance(v, list) else [v] for k, v in value.items()}
        return value

    @field_validator("params")
    @classmethod
    def _known_params(cls, value: dict[str, list[Any]], info: ValidationInfo) -> dict[str, list[Any]]:
        name = info.data.get("class_")
        if name is None:
            return value
        valid = ESTIMATOR_ALLOWLIST[name].params
        unknown = sorted(set(value) - valid)
        if unknown:
            raise ValueError(f"{name} has no parameter(s) {', '.join(unknown)}; valid: {', '.join(sorted(valid))}")
        empty = sorted(k for k, v in value.items() if not v)
        if empty:
            raise ValueError(f"{name} parameter(s) {', '.join(empty)} need at least one candidate value")
        return value


class SearchSpec(BaseModel):
    """How hyperparameters are searched."""

    model_config = ConfigDict(extra="forbid")

    strategy: Literal["grid", "random", "halving"] = "grid"
    cv: int = Field(default=3, ge=2, le=20)
    n_iter: int = Field(default=10, ge=1)


def _default_param_max() -> dict[str, int]:
    # Parameters whose size drives a fit's time or memory, with the largest value a spec may ask for.
    return {
        "n_estimators": 1000,
        "max_iter": 10_000,
        "max_depth": 100,
        "max_leaf_nodes": 10_000,
        "n_neighbors": 1000,
        "n_iter_no_change": 1000,
    }


class SpecLimits(BaseModel):
    """How much work one spec may ask of a trainer: checked when a spec is submitted and again before it trains.

    A deployment sets the same limits on the registry (``MLOOP_REGISTRY_LIMITS__...``) and the
    trainer (``MLOOP_TRAINER_LIMITS__...``); the trainer's check catches specs stored under looser ones.
    """

    model_config = ConfigDict(extra="forbid")

    # Parameter combinations over all estimators (a random search counts min(n_iter, grid) per estimator).
    max_grid_points: int = Field(default=200, ge=1)
    max_n_iter: int = Field(default=200, ge=1)
    # Threads one fit may start (estimators' n_jobs); -1 ("every core") is never allowed.
    max_n_jobs: int = Field(default=2, ge=1)
    param_max: dict[str, int] = Field(default_factory=_default_param_max)


def grid_points(spec: ModelSpec) -> int:
    """Parameter combinations the search will try, over all of the spec's estimators."""
    total = 0
    for estimator in spec.estimators:
        points = 1
        for values in estimator.params.values():
            points *= len(values)
        total += min(points, spec.search.n_iter) if spec.search.strategy == "random" else points
    return total


def check_limits(spec: ModelSpec, limits: SpecLimits) -> None:
    """InvalidInput naming the field when ``spec`` asks for more work than ``limits`` allow."""
    if spec.search.strategy == "random" and spec.search.n_iter > limits.max_n_iter:
        raise InvalidInput(
            f"search.n_iter is {spec.search.n_iter}, more than the limit of {limits.max_n_iter}", field="search.n_iter"
        )
    points = grid_points(spec)
    if points > limits.max_grid_points:
        raise InvalidInput(
            f"the search space has {points} parameter combinations, more than the limit of {limits.max_grid_points}; "
            "list fewer candidate values",
            field="estimators",
        )
    bounds = {**limits.param_max, "n_jobs": limits.max_n_jobs}
    for index, estimator in enumerate(spec.estimators):
        for name, values in estimator.params.items():
            if name not in bounds:
                continue
            field = f"estimators.{index}.params.{name}"
            for value in values:
                if value is None:
                    continue  # scikit-learn's default: one thread, or a depth or leaf count the data bounds
                if isinstance(value, bool) or not isinstance(value, int | float):
                    raise InvalidInput(f"{field}: {value!r} is not a number", field=field)
                if not 1 <= value <= bounds[name]:
                    raise InvalidInput(
                        f"{field}: {value!r} is outside the allowed range 1..{bounds[name]}", field=field
                    )


class MetricGate(BaseModel):
    """How much better than the champion a candidate must be on one metric (negative: how much worse it may be)."""

    model_config = ConfigDict(extra="forbid")

    min_improvement: float = 0.0
    # relative: a share of the champion's value (0.01 = 1% better); the direction follows the metric.
    relative: bool = False


class PromotionPolicy(BaseModel):
    """When a candidate may replace the champion (the validator's release gate and the registry's approval rules).

    On the first model of a name the comparisons with a champion are skipped; the absolute bounds apply.
    """

    model_config = ConfigDict(extra="forbid")

    # Over the champion on the primary metric, absolute, in the metric's own direction.
    min_improvement: float = 0.0
    # More gates over the champion, per metric (the primary metric's here replaces min_improvement).
    improvements: dict[str, MetricGate] = Field(default_factory=dict)
    # Absolute floors per metric: the least a score (or, for errors such as rmse, the most) may be.
    floors: dict[str, float] = Field(default_factory=dict)
    slices: list[str] = Field(default_factory=list)
    max_slice_regression: float = Field(default=0.02, ge=0)
    # Largest gap in positive-prediction rate or true-positive rate across the values of a slice column.
    max_fairness_gap: float | None = Field(default=None, ge=0, le=1)
    # Robustness: predictions under small seeded perturbations (Gaussian noise of perturbation_noise times
    # each numeric feature's standard deviation; a perturbation_swap_rate share of categories swapped).
    perturbation_noise: float = Field(default=0.05, ge=0, le=1)
    perturbation_swap_rate: float = Field(default=0.05, ge=0, le=1)
    max_flip_rate: float | None = Field(default=None, ge=0, le=1)  # share of class predictions that change
    max_calibration_error: float | None = Field(default=None, ge=0, le=1)  # expected calibration error
    max_p99_latency_ms: float | None = Field(default=None, gt=0)  # per single-row prediction
    max_artifact_mb: float | None = Field(default=None, gt=0)
    require_approval: bool = False
    # A passing candidate first serves beside production: canary_percent of the traffic (sticky per routing key),
    # or with shadow, scored on a copy of every request and never returned. A person then promotes or rolls back.
    canary_percent: float = Field(default=0, ge=0, le=100)
    shadow: bool = False

    @field_validator("shadow")
    @classmethod
    def _one_rollout(cls, shadow: bool, info: ValidationInfo) -> bool:
        if shadow and info.data.get("canary_percent"):
            raise ValueError("a candidate is either a canary (canary_percent > 0) or a shadow, not both")
        return shadow


# Drift tests a spec may name per column kind, and the bounds their statistic thresholds may take.
# Listed here (not imported from the drift service) so specs validate without it; drift's tests check
# that every name is one of its registered methods.
DRIFT_METHODS: dict[str, Literal["numeric", "categorical"]] = {
    "ks": "numeric",
    "psi": "numeric",
    "wasserstein": "numeric",
    "chi2": "categorical",
    "jensen_shannon": "categorical",
}
MAX_DRIFT_WINDOW = 100_000
_DURATION_UNITS = {"m": 60, "h": 3600, "d": 86_400, "w": 604_800}
MIN_WINDOW_TIME_SECONDS = 60
MAX_WINDOW_TIME_SECONDS = 90 * 86_400


def duration_seconds(text: str) -> int:
    """Seconds in a duration such as ``30m``, ``6h``, ``1d`` or ``2w``; ValueError otherwise."""
    match = re.fullmatch(r"\s*(\d{1,6})\s*([mhdw])\s*", text)
    if match is None:
        raise ValueError(f"{text!r} is not a duration: write a whole number and a unit m, h, d or w (e.g. 1d)")
    return int(match.group(1)) * _DURATION_UNITS[match.group(2)]


class FeatureConstraint(BaseModel):
    """A feature's declared contract beyond its type: values outside it are broken data, not drift."""

    model_config = ConfigDict(extra="forbid")

    min: float | None = None
    max: float | None = None
    categories: list[str] | None = Field(default=None, min_length=1)
    # None: nullable exactly when the training data had missing values.
    nullable: bool | None = None

    @field_validator("max")
    @classmethod
    def _ordered(cls, value: float | None, info: ValidationInfo) -> float | None:
        low = info.data.get("min")
        if value is not None and low is not None and value < low:
            raise ValueError(f"max {value} is below min {low}")
        return value


class DriftPolicy(BaseModel):
    """How production traffic is windowed and judged, and how long to wait after an alarm (docs/drift.md)."""

    model_config = ConfigDict(extra="forbid")

    # Predictions per window; a window is held in memory while it is judged, hence the upper bound.
    window: int = Field(default=1000, ge=50, le=MAX_DRIFT_WINDOW)
    # Event-time windows (e.g. "1d") instead of counted ones; the event time is the spec's time column in
    # the request when present, else the prediction's timestamp.
    window_time: str | None = None
    cooldown_windows: int = Field(default=3, ge=0, le=1000)
    # Performance from labels counts once this share of a window (and at least min_labels rows) is labelled.
    min_label_coverage: float = Field(default=0.5, gt=0, le=1)
    min_labels: int = Field(default=30, ge=1, le=MAX_DRIFT_WINDOW)
    # Tolerance before "retrain": an absolute drop of a score (accuracy, roc_auc, f1, r2, ...) or a
    # relative rise of an error (rmse, mae, log_loss) against the version's baseline.
    max_metric_drop: float = Field(default=0.05, gt=0, le=1)
    max_error_increase: float = Field(default=0.2, gt=0, le=10)
    # Share of features that must drift for a covariate shift.
    drift_share: float = Field(default=0.3, gt=0, le=1)
    # A covariate shift with performance holding alerts (investigate); true makes it recommend retraining.
    retrain_on_covariate_shift: bool = False
    numeric_tests: list[str] | None = Field(default=None, min_length=1)
    categorical_tests: list[str] | None = Field(default=None, min_length=1)
    # Per test name, the statistic bound (psi, wasserstein, jensen_shannon) or minimum effect (ks, chi2).
    thresholds: dict[str, float] = Field(default_factory=dict)
    constraints: dict[str, FeatureConstraint] = Field(default_factory=dict)

    @field_validator("window_time")
    @classmethod
    def _window_time_in_bounds(cls, value: str | None) -> str | None:
        if value is None:
            return value
        seconds = duration_seconds(value)
        if not MIN_WINDOW_TIME_SECONDS <= seconds <= MAX_WINDOW_TIME_SECONDS:
            raise ValueError(f"window_time {value!r} must be between 1m and 90d")
        return value.strip()

    @field_validator("numeric_tests", "categorical_tests")
    @classmethod
    def _known_tests(cls, value: list[str] | None, info: ValidationInfo) -> list[str] | None:
        kind = "numeric" if info.field_name == "numeric_tests" else "categorical"
        for name in value or ():
            if DRIFT_METHODS.get(name) != kind:
                known = ", ".join(n for n, k in DRIFT_METHODS.items() if k == kind)
                raise ValueError(f"{name!r} is not a {kind} drift test; use one of {known}")
        return value

    @field_validator("thresholds")
    @classmethod
    def _thresholds_in_bounds(cls, value: dict[str, float]) -> dict[str, float]:
        for name, bound in value.items():
            if name not in DRIFT_METHODS:
                raise ValueError(f"no drift test named {name!r}; use one of {', '.join(DRIFT_METHODS)}")
            if not 0 < bound <= 10:
                raise ValueError(f"threshold of {name} must be in (0, 10], got {bound}")
        return value


class RetrainPolicy(BaseModel):
    """What a drift-triggered retraining learns from."""

    model_config = ConfigDict(extra="forbid")

    # Newest dataset rows kept next to the recent labelled production rows; None keeps them all,
    # 0 trains on production data alone (old data hurts under concept drift).
    history_rows: int | None = Field(default=None, ge=0)


class EvaluationSet(BaseModel):
    """A pinned dataset version on which the validator also measures every candidate and the champion.

    A run's holdout changes with each dataset version; a pinned version is the same rows for every
    candidate, so their scores compare across runs (docs/api.md, "validator").
    """

    model_config = ConfigDict(extra="forbid")

    # None: a version of the spec's own dataset.
    dataset: str | None = Field(default=None, pattern=NAME_PATTERN)
    version: int = Field(ge=1, le=2**31 - 1)


class ModelSpec(BaseModel):
    """A complete model declaration."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=NAME_PATTERN)
    dataset: str = Field(pattern=NAME_PATTERN)
    task: Task
    target: str = Field(min_length=1)
    features: list[str] | None = Field(default=None, min_length=1)
    time_column: str | None = None
    estimators: list[EstimatorSpec] = Field(min_length=1)
    search: SearchSpec = Field(default_factory=SearchSpec)
    metric: str
    holdout: float = Field(default=0.2, gt=0, lt=0.9)
    evaluation: EvaluationSet | None = None
    promotion: PromotionPolicy = Field(default_factory=PromotionPolicy)
    drift: DriftPolicy = Field(default_factory=DriftPolicy)
    retrain: RetrainPolicy = Field(default_factory=RetrainPolicy)
    seed: int = 42

    @field_validator("estimators")
    @classmethod
    def _estimators_match_task(cls, value: list[EstimatorSpec], info: ValidationInfo) -> list[EstimatorSpec]:
        task = info.data.get("task")
        if task is None:
            return value
        for index, estimator in enumerate(value):
            estimator_task = ESTIMATOR_ALLOWLIST[estimator.class_].task
            if estimator_task != task:
                raise ValueError(
                    f"estimators[{index}]: {estimator.class_} is a {estimator_task} estimator but the task is {task}"
                )
        return value

    @field_validator("metric")
    @classmethod
    def _metric_matches_task(cls, value: str, info: ValidationInfo) -> str:
        task = info.data.get("task")
        if task is not None and value not in METRICS[task]:
            raise ValueError(f"metric {value!r} is not valid for {task}; use one of {', '.join(METRICS[task])}")
        return value

    @field_validator("features")
    @classmethod
    def _features_exclude_target(cls, value: list[str] | None, info: ValidationInfo) -> list[str] | None:
        if value is None:
            return value
        duplicates = sorted({f for f in value if value.count(f) > 1})
        if duplicates:
            raise ValueError(f"features listed more than once: {', '.join(duplicates)}")
        target = info.data.get("target")
        if target in value:
            raise ValueError(f"features must not include the target column {target!r}")
        return value

    @field_validator("time_column")
    @classmethod
    def _time_column_not_feature(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return value
        if value == info.data.get("target"):
            raise ValueError(f"time_column {value!r} cannot also be the target")
        if value in (info.data.get("features") or []):
            raise ValueError(f"time_column {value!r} must not also be listed in features")
        return value

    @field_validator("drift")
    @classmethod
    def _constraints_name_features(cls, value: DriftPolicy, info: ValidationInfo) -> DriftPolicy:
        features = info.data.get("features")
        if features is not None:
            unknown = [name for name in value.constraints if name not in features]
            if unknown:
                raise ValueError(f"constraints name {', '.join(unknown)}, which are not among the features")
        return value

    @field_validator("promotion")
    @classmethod
    def _gates_name_metrics_of_the_task(cls, value: PromotionPolicy, info: ValidationInfo) -> PromotionPolicy:
        task = info.data.get("task")
        if task is None:
            return value
        for where, names in (("improvements", value.improvements), ("floors", value.floors)):
            unknown = sorted(set(names) - set(GATE_METRICS[task]))
            if unknown:
                raise ValueError(
                    f"{where} name {', '.join(unknown)}, not metrics of {task}; use {', '.join(GATE_METRICS[task])}"
                )
        if task == "regression" and (value.max_calibration_error is not None or value.max_flip_rate is not None):
            raise ValueError("max_calibration_error and max_flip_rate apply to classification only")
        return value

    @field_validator("promotion")
    @classmethod
    def _slices_are_features(cls, value: PromotionPolicy, info: ValidationInfo) -> PromotionPolicy:
        features = info.data.get("features")
        if features is not None:
            missing = [s for s in value.slices if s not in features]
            if missing:
                raise ValueError(f"slices {', '.join(missing)} must be among the features")
        return value


def parse_spec(body: bytes | str, content_type: str) -> ModelSpec:
    """Parse a JSON or YAML spec body; SpecError if unreadable, InvalidInput naming the field if invalid."""
    media_type = (content_type or "application/json").split(";")[0].strip().lower()
    is_json = media_type in _JSON_TYPES or media_type.endswith("+json")
    if not is_json and not (media_type in _YAML_TYPES or media_type.endswith("+yaml")):
        raise SpecError(f"unsupported content type {media_type!r}; send JSON or YAML")
    try:
        text = body.decode("utf-8") if isinstance(body, bytes) else body
        data = json.loads(text) if is_json else yaml.safe_load(text)
    except (UnicodeDecodeError, json.JSONDecodeError, yaml.YAMLError) as exc:
        raise SpecError(f"spec is not valid {'JSON' if is_json else 'YAML'}: {exc}") from exc
    if not isinstance(data, dict):
        raise SpecError("spec must be a mapping of fields (name, dataset, task, ...)")
    if nul := _first_nul(data):
        # JSON's \u0000 and YAML's "\0" make text PostgreSQL cannot store; no spec field needs one.
        raise InvalidInput(f"{nul}: contains a NUL character", field=nul)
    try:
        return ModelSpec.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(part) for part in first["loc"]) or None
        raise InvalidInput(f"{field}: {first['msg']}" if field else first["msg"], field=field) from exc


def _first_nul(node: Any, path: str = "") -> str | None:
    """The path of the first key or string holding a NUL character, if any."""
    if isinstance(node, str):
        return path or "body" if "\x00" in node else None
    if isinstance(node, dict):
        for key, value in node.items():
            here = f"{path}.{key}" if path else str(key)
            if "\x00" in str(key):
                return here
            if found := _first_nul(value, here):
                return found
    if isinstance(node, list):
        for index, value in enumerate(node):
            if found := _first_nul(value, f"{path}.{index}"):
                return found
    return None


def spec_digest(spec: ModelSpec) -> str:
    """sha256 of the canonical JSON form of a spec; equal specs give equal digests."""
    document = spec.model_dump(mode="json", by_alias=True)
    if document.get("evaluation") is None:
        del document["evaluation"]  # specs from before pinned evaluation sets keep the digests they were stored with
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()
