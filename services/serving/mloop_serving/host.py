"""Models in memory: input checking, prediction and the atomic swap (no I/O here)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from mloop_common.errors import InvalidInput, NotFound
from mloop_common.profile import CategoricalProfile, FeatureKind, ReferenceProfile


@dataclass(frozen=True)
class LoadedModel:
    name: str
    version: int
    task: str
    features: list[str]
    kinds: dict[str, FeatureKind]  # from the reference profile
    estimator: Any
    classes: list[Any] = field(default_factory=list)

    def frame(self, instances: list[dict[str, Any]]) -> pd.DataFrame:
        """Instances as the model's input frame; a missing feature or a wrong type is a 422 naming it."""
        columns: dict[str, list[Any]] = {f: [] for f in self.features}
        for index, instance in enumerate(instances):
            if not isinstance(instance, dict):
                raise InvalidInput(
                    f"instances[{index}] must be an object of feature values", field=f"instances[{index}]"
                )
            for feature in self.features:
                if feature not in instance:
                    raise InvalidInput(
                        f"instances[{index}] lacks feature {feature!r}", field=f"instances[{index}].{feature}"
                    )
                value = instance[feature]
                if (
                    self.kinds.get(feature) == "numeric"
                    and value is not None
                    and (isinstance(value, bool) or not isinstance(value, int | float))
                ):
                    raise InvalidInput(
                        f"instances[{index}].{feature} must be a number or null, got {value!r}",
                        field=f"instances[{index}].{feature}",
                    )
                columns[feature].append(value)
        frame = pd.DataFrame(columns, columns=self.features)
        for feature, kind in self.kinds.items():
            if kind == "numeric" and feature in frame:
                frame[feature] = pd.to_numeric(frame[feature], errors="coerce").astype(float)
        return frame

    def predict(self, frame: pd.DataFrame) -> tuple[list[Any], list[list[float]] | None]:
        predictions = _plain_list(self.estimator.predict(frame))
        probabilities = None
        if self.task == "classification" and hasattr(self.estimator, "predict_proba"):
            probabilities = [[float(p) for p in row] for row in self.estimator.predict_proba(frame)]
        return predictions, probabilities


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


class ModelHost:
    """The models this process serves; replacing one is a single dict assignment, hence atomic."""

    def __init__(self) -> None:
        self._models: dict[str, LoadedModel] = {}

    def get(self, name: str, version: int | None = None) -> LoadedModel:
        model = self._models.get(name)
        if model is None:
            raise NotFound(f"model {name!r} is not served here (no production version loaded)")
        if version is not None and version != model.version:
            raise NotFound(f"model {name!r} version {version} is not loaded; serving version {model.version}")
        return model

    def current_version(self, name: str) -> int | None:
        model = self._models.get(name)
        return model.version if model else None

    def swap(self, model: LoadedModel) -> LoadedModel | None:
        previous = self._models.get(model.name)
        self._models[model.name] = model
        return previous

    def names(self) -> list[str]:
        return sorted(self._models)
