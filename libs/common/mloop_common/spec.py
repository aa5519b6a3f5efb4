"""The model spec: what a data scientist declares about a model, validated at the edge.

The registry stores it, the trainer fits it, the validator and the drift service read
its promotion and drift policies. Everything a spec may name (estimators, their
parameters, metrics) is checked here, so a bad spec fails on submission with a message
naming the field rather than hours later inside a training run.
"""

from __future__ import annotations

import hashlib
import json
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

METRICS: dict[Task, tuple[str, ...]] = {
    "classification": ("accuracy", "balanced_accuracy", "f1", "roc_auc", "log_loss"),
    "regression": ("rmse", "mae", "r2"),
}

_LOWER_IS_BETTER = frozenset({"log_loss", "rmse", "mae"})

_JSON_TYPES = frozenset({"application/json", "text/json"})
_YAML_TYPES = frozenset({"application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml"})


class SpecError(InvalidInput):
    """A spec body that cannot be read as JSON or YAML at all."""

    def __init__(self, message: str) -> None:
        super().__init__(message, field="body")


def metric_higher_is_better(metric: str) -> bool:
    """True when a larger value of the metric means a better model."""
    if not any(metric in names for names in METRICS.values()):
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


class PromotionPolicy(BaseModel):
    """When a candidate may replace the champion."""

    model_config = ConfigDict(extra="forbid")

    min_improvement: float = 0.0
    slices: list[str] = Field(default_factory=list)
    max_slice_regression: float = Field(default=0.02, ge=0)
    require_approval: bool = False
    canary_percent: float = Field(default=0, ge=0, le=100)


class DriftPolicy(BaseModel):
    """How production traffic is windowed and how long to wait after an alarm."""

    model_config = ConfigDict(extra="forbid")

    window: int = Field(default=1000, ge=50)
    cooldown_windows: int = Field(default=3, ge=0)


class RetrainPolicy(BaseModel):
    """What a drift-triggered retraining learns from."""

    model_config = ConfigDict(extra="forbid")

    # Newest dataset rows kept next to the recent labelled production rows; None keeps them all,
    # 0 trains on production data alone (old data hurts under concept drift).
    history_rows: int | None = Field(default=None, ge=0)


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
    try:
        return ModelSpec.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(part) for part in first["loc"]) or None
        raise InvalidInput(f"{field}: {first['msg']}" if field else first["msg"], field=field) from exc


def spec_digest(spec: ModelSpec) -> str:
    """sha256 of the canonical JSON form of a spec; equal specs give equal digests."""
    canonical = json.dumps(
        spec.model_dump(mode="json", by_alias=True), sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()
