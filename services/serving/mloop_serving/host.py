"""Models in memory: input checking, prediction and the atomic swap (no I/O here)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal

import numpy as np
import pandas as pd

from mloop_common.errors import InvalidInput, NotFound, ServiceUnavailable
from mloop_common.events import CANARY, PRODUCTION, SHADOW
from mloop_common.profile import CategoricalProfile, FeatureKind, ReferenceProfile
from mloop_serving.routing import takes_canary

Route = Literal["champion", "canary", "challenger"]  # how a returned answer was chosen (shadow never returns)


@dataclass(frozen=True)
class LoadedModel:
    name: str
    version: int
    task: str
    features: list[str]
    kinds: dict[str, FeatureKind]  # from the reference profile
    estimator: Any
    classes: list[Any] = field(default_factory=list)
    # What other modules derive from the model once rather than per request (the protocol's output datatypes)
    derived: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def frame(self, instances: list[dict[str, Any]]) -> pd.DataFrame:
        """Instances as the model's input frame; a missing feature or a wrong type is a 422 naming it."""
        return self.frame_of(self.rows(instances))

    def rows(self, instances: list[dict[str, Any]]) -> list[list[Any]]:
        """Instances checked, as rows of feature values in the model's order (what ``frame_of`` takes)."""
        checks = list(zip(self.features, self._numeric, strict=True))
        rows: list[list[Any]] = []
        for index, instance in enumerate(instances):
            if not isinstance(instance, dict):
                raise InvalidInput(
                    f"instances[{index}] must be an object of feature values", field=f"instances[{index}]"
                )
            row = []
            for feature, numeric in checks:
                if feature not in instance:
                    raise InvalidInput(
                        f"instances[{index}] lacks feature {feature!r}", field=f"instances[{index}].{feature}"
                    )
                value = instance[feature]
                if numeric and value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
                    raise InvalidInput(
                        f"instances[{index}].{feature} must be a number or null, got {value!r}",
                        field=f"instances[{index}].{feature}",
                    )
                row.append(value)
            rows.append(row)
        return rows

    def checked_rows(self, instances: list[dict[str, Any]]) -> list[list[Any]]:
        """Instances already known to hold every feature with a value of its kind (the protocol's tensors, checked
        by their datatypes) as rows in the model's order: what ``rows`` gives, without checking each value again."""
        features = self.features
        return [[instance[feature] for feature in features] for instance in instances]

    def frame_of(self, rows: list[list[Any]]) -> pd.DataFrame:
        """Checked rows (``rows``) as the model's input frame: numeric features as float64 (null: NaN).

        Built from one float block when every feature is numeric (a tenth of the cost of per-column
        conversion on a single row), else column by column.
        """
        width = len(self.features)
        if all(self._numeric):
            block = np.array(rows, dtype=np.float64).reshape(len(rows), width)
            return pd.DataFrame(block, columns=self._columns, copy=False)
        columns: dict[str, Any] = {}
        for position, (feature, numeric) in enumerate(zip(self.features, self._numeric, strict=True)):
            values = [row[position] for row in rows]
            columns[feature] = np.array(values, dtype=np.float64) if numeric else values
        return pd.DataFrame(columns, columns=self._columns)

    @cached_property
    def _columns(self) -> pd.Index:
        """The features as a column index, made once: building it from the list of names was most of the cost
        of a one-row frame (an Index is immutable, so every frame can share it). Of Python strings (object), as
        scikit-learn keeps a model's feature names: pandas 3 would make it an Arrow string index, which scikit-learn
        reads name by name on every call (some 7% of a 60-row call of a ColumnTransformer pipeline)."""
        return pd.Index(self.features, dtype=object)

    @cached_property
    def feature_set(self) -> frozenset[str]:
        """The features, for membership tests (a request names up to every one)."""
        return frozenset(self.features)

    @cached_property
    def numeric_features(self) -> frozenset[str]:
        """The features the reference profile says are numeric."""
        return frozenset(f for f in self.features if self.kinds.get(f) == "numeric")

    @cached_property
    def _numeric(self) -> list[bool]:
        """Per feature, in order: whether the reference profile says it is numeric."""
        return [self.kinds.get(feature) == "numeric" for feature in self.features]

    @cached_property
    def _proba_labels(self) -> np.ndarray | None:
        """The classes in ``predict_proba``'s column order, when labels can be read off the probabilities."""
        if self.task != "classification" or not hasattr(self.estimator, "predict_proba"):
            return None
        classes = getattr(self.estimator, "classes_", None)
        return np.asarray(classes) if classes is not None and np.ndim(classes) == 1 else None

    def predict(self, frame: pd.DataFrame) -> tuple[list[Any], list[list[float]] | None]:
        """Labels and (classifiers) probabilities.

        A classifier runs once: its label is the class of highest probability, which is how scikit-learn's
        classifiers define ``predict`` (running the pipeline a second time for it doubled the cost).
        """
        labels = self._proba_labels
        if labels is None:
            return _plain_list(self.estimator.predict(frame)), None
        probabilities = np.asarray(self.estimator.predict_proba(frame), dtype=np.float64)
        predictions = _plain_list(labels[probabilities.argmax(axis=1)])
        return predictions, probabilities.tolist()


def _plain_list(values: np.ndarray) -> list[Any]:
    out = []
    for value in values.tolist():
        out.append(None if isinstance(value, float) and math.isnan(value) else value)
    return out


def warmup_instance(profile: ReferenceProfile, features: list[str]) -> dict[str, Any]:
    """A typical row from the reference profile, used to warm a model before it takes traffic."""
    row: dict[str, Any] = {}
    for feature in features:
        entry = profile.features.get(feature)
        if isinstance(entry, CategoricalProfile):
            frequencies = entry.frequencies
            row[feature] = max(frequencies, key=frequencies.__getitem__) if frequencies else None
        else:
            row[feature] = entry.mean if entry is not None else None
    return row


@dataclass(frozen=True)
class Rollout:
    """A version served beside production under a rollout alias (canary, shadow or challenger)."""

    alias: str
    model: LoadedModel
    percent: float = 0.0  # the canary's share of traffic


@dataclass(frozen=True)
class Routed:
    """The version that answers a request, and by which route it was chosen."""

    model: LoadedModel
    route: Route


@dataclass(frozen=True)
class _Hosted:
    production: LoadedModel | None = None
    rollouts: dict[str, Rollout] = field(default_factory=dict)


class ModelHost:
    """The versions this process serves, per model: production and its rollouts.

    Every change replaces a model's whole entry in one dict assignment, hence is atomic: a request sees
    the versions of before a change, or of after it, never a mix.
    """

    def __init__(self) -> None:
        self._models: dict[str, _Hosted] = {}
        # True until the loader has tried every production model once (it sets and clears it): until then a
        # model missing here may just not be loaded yet, which is worth a retry (503), not a 404.
        self.starting = False

    def get(self, name: str, version: int | None = None) -> LoadedModel:
        """Production, or the hosted ``version`` (production or a rollout)."""
        hosted = self._models.get(name, _Hosted())
        if version is None or (hosted.production is not None and hosted.production.version == version):
            if hosted.production is None and self.starting:
                raise ServiceUnavailable(f"model {name!r} is not loaded yet: serving is starting")
            if hosted.production is None:
                raise NotFound(f"model {name!r} is not served here (no production version loaded)")
            return hosted.production
        for rollout in hosted.rollouts.values():
            if rollout.model.version == version:
                return rollout.model
        loaded = sorted(self.versions(name))
        raise NotFound(f"model {name!r} version {version} is not loaded; loaded versions: {loaded}")

    def by_alias(self, name: str, alias: str) -> LoadedModel:
        """The version hosted under ``alias``."""
        if alias == PRODUCTION:
            return self.get(name)
        rollout = self._models.get(name, _Hosted()).rollouts.get(alias)
        if rollout is None:
            raise NotFound(f"model {name!r} has no {alias!r} version loaded here")
        return rollout.model

    def route(self, name: str, key: str) -> Routed:
        """Production, or the canary for the share of routing keys it takes."""
        production = self.get(name)
        canary = self._models[name].rollouts.get(CANARY)
        if canary is not None and takes_canary(key, canary.percent):
            return Routed(canary.model, "canary")
        return Routed(production, "champion")

    def explicit(self, model: LoadedModel) -> Routed:
        """A version the client named: the champion route if it is production, else the challenger route."""
        production = self._models.get(model.name, _Hosted()).production
        return Routed(model, "champion" if production is model else "challenger")

    def shadow(self, name: str) -> LoadedModel | None:
        """The version that scores a copy of every production request, if any."""
        rollout = self._models.get(name, _Hosted()).rollouts.get(SHADOW)
        return rollout.model if rollout is not None else None

    def current_version(self, name: str, alias: str = PRODUCTION) -> int | None:
        hosted = self._models.get(name, _Hosted())
        if alias == PRODUCTION:
            return hosted.production.version if hosted.production else None
        rollout = hosted.rollouts.get(alias)
        return rollout.model.version if rollout else None

    def rollout(self, name: str, alias: str) -> Rollout | None:
        return self._models.get(name, _Hosted()).rollouts.get(alias)

    def versions(self, name: str) -> set[int]:
        hosted = self._models.get(name, _Hosted())
        found = {r.model.version for r in hosted.rollouts.values()}
        return found | ({hosted.production.version} if hosted.production else set())

    def loaded(self, name: str, version: int) -> LoadedModel | None:
        """The hosted ``version`` of ``name`` under any alias (a canary becoming production is not loaded again)."""
        try:
            return self.get(name, version)
        except NotFound:
            return None

    def swap(self, model: LoadedModel) -> LoadedModel | None:
        """Make ``model`` production; returns the version it replaced."""
        hosted = self._models.get(model.name, _Hosted())
        self._models[model.name] = _Hosted(model, hosted.rollouts)
        return hosted.production

    def set_rollout(self, name: str, rollout: Rollout | None, alias: str) -> Rollout | None:
        """Host ``rollout`` under ``alias`` (None: stop hosting it); returns what it replaced."""
        hosted = self._models.get(name, _Hosted())
        rollouts = {a: r for a, r in hosted.rollouts.items() if a != alias}
        if rollout is not None:
            rollouts[alias] = rollout
        self._models[name] = _Hosted(hosted.production, rollouts)
        return hosted.rollouts.get(alias)

    def names(self) -> list[str]:
        """Models with a production version served."""
        return sorted(name for name, hosted in self._models.items() if hosted.production is not None)
