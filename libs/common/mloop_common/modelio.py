"""Model files in the skops format, loaded only when every type inside is on our own list.

skops on its own trusts all of scikit-learn by default (so a fitted SVC or any other
sklearn class would load silently). We instead enumerate every type named anywhere in
the file and refuse the file unless each one is in TRUSTED_TYPES: the preprocessing
steps mloop builds, the allowlisted estimators, and the internals they carry.
"""

from __future__ import annotations

import importlib
import io
import json
import zipfile
from typing import Any

import numpy as np
import pandas as pd
import skops.io as sio
from skops.io.exceptions import UntrustedTypesFoundException

from mloop_common.errors import InvalidInput
from mloop_common.spec import ESTIMATOR_ALLOWLIST

TRUSTED_TYPES: tuple[str, ...] = (
    # containers and scalars the skops format itself uses
    "builtins.bool",
    "builtins.dict",
    "builtins.float",
    "builtins.int",
    "builtins.list",
    "builtins.slice",
    "builtins.str",
    "builtins.tuple",
    "numpy.bool",
    "numpy.dtype",
    "numpy.float32",
    "numpy.float64",
    "numpy.int32",
    "numpy.int64",
    "numpy.ndarray",
    "numpy.random._generator.Generator",
    "numpy.random.mtrand.RandomState",
    "numpy.uint64",
    # the preprocessing mloop builds around every estimator
    "mloop_common.modelio.as_category_strings",
    "sklearn.compose._column_transformer.ColumnTransformer",
    "sklearn.impute._base.SimpleImputer",
    "sklearn.pipeline.Pipeline",
    "sklearn.preprocessing._data.StandardScaler",
    "sklearn.preprocessing._encoders.OneHotEncoder",
    "sklearn.preprocessing._function_transformer.FunctionTransformer",
    "sklearn.preprocessing._label.LabelEncoder",
    # allowlisted estimators (mloop_common.spec.ESTIMATOR_ALLOWLIST)
    "sklearn.ensemble._forest.ExtraTreesClassifier",
    "sklearn.ensemble._forest.ExtraTreesRegressor",
    "sklearn.ensemble._forest.RandomForestClassifier",
    "sklearn.ensemble._forest.RandomForestRegressor",
    "sklearn.ensemble._gb.GradientBoostingClassifier",
    "sklearn.ensemble._gb.GradientBoostingRegressor",
    "sklearn.ensemble._hist_gradient_boosting.gradient_boosting.HistGradientBoostingClassifier",
    "sklearn.ensemble._hist_gradient_boosting.gradient_boosting.HistGradientBoostingRegressor",
    "sklearn.linear_model._base.LinearRegression",
    "sklearn.linear_model._coordinate_descent.ElasticNet",
    "sklearn.linear_model._coordinate_descent.Lasso",
    "sklearn.linear_model._logistic.LogisticRegression",
    "sklearn.linear_model._ridge.Ridge",
    "sklearn.naive_bayes.GaussianNB",
    "sklearn.neighbors._classification.KNeighborsClassifier",
    "sklearn.neighbors._regression.KNeighborsRegressor",
    "sklearn.tree._classes.DecisionTreeClassifier",
    "sklearn.tree._classes.DecisionTreeRegressor",
    # internals of those estimators: fitted trees, boosting state, neighbour indexes
    "sklearn.dummy.DummyClassifier",
    "sklearn.dummy.DummyRegressor",
    "sklearn.ensemble._hist_gradient_boosting.binning._BinMapper",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "sklearn.tree._classes.ExtraTreeClassifier",
    "sklearn.tree._classes.ExtraTreeRegressor",
    "sklearn.tree._tree.Tree",
    "sklearn.neighbors._ball_tree.BallTree",
    "sklearn.neighbors._kd_tree.KDTree",
    "sklearn.metrics._dist_metrics.ChebyshevDistance64",
    "sklearn.metrics._dist_metrics.EuclideanDistance64",
    "sklearn.metrics._dist_metrics.ManhattanDistance64",
    "sklearn.metrics._dist_metrics.MinkowskiDistance64",
    "sklearn._loss._loss.CyAbsoluteError",
    "sklearn._loss._loss.CyExponentialLoss",
    "sklearn._loss._loss.CyHalfBinomialLoss",
    "sklearn._loss._loss.CyHalfGammaLoss",
    "sklearn._loss._loss.CyHalfMultinomialLoss",
    "sklearn._loss._loss.CyHalfPoissonLoss",
    "sklearn._loss._loss.CyHalfSquaredError",
    "sklearn._loss._loss.CyHuberLoss",
    "sklearn._loss._loss.CyPinballLoss",
    "sklearn._loss.link.HalfLogitLink",
    "sklearn._loss.link.IdentityLink",
    "sklearn._loss.link.Interval",
    "sklearn._loss.link.LogLink",
    "sklearn._loss.link.LogitLink",
    "sklearn._loss.link.MultinomialLogit",
    "sklearn._loss.loss.AbsoluteError",
    "sklearn._loss.loss.ExponentialLoss",
    "sklearn._loss.loss.HalfBinomialLoss",
    "sklearn._loss.loss.HalfGammaLoss",
    "sklearn._loss.loss.HalfMultinomialLoss",
    "sklearn._loss.loss.HalfPoissonLoss",
    "sklearn._loss.loss.HalfSquaredError",
    "sklearn._loss.loss.HuberLoss",
    "sklearn._loss.loss.PinballLoss",
)

_TRUSTED = frozenset(TRUSTED_TYPES)


class ModelIOError(InvalidInput):
    """A model that cannot be written or read as a skops file."""


class UntrustedModelError(ModelIOError):
    """A model file that names types outside TRUSTED_TYPES."""

    def __init__(self, types: list[str]) -> None:
        self.types = types
        super().__init__(f"model file contains untrusted types: {', '.join(types)}")


def estimator_class(name: str) -> type:
    """Import and return the scikit-learn class of an allowlisted estimator name."""
    if name not in ESTIMATOR_ALLOWLIST:
        raise InvalidInput(f"estimator {name!r} is not in the allowlist", field="class")
    module_name, _, class_name = ESTIMATOR_ALLOWLIST[name].path.rpartition(".")
    cls: type = getattr(importlib.import_module(module_name), class_name)
    return cls


def as_category_strings(values: Any) -> np.ndarray:
    """Categorical columns as text, missing as NaN, so mixed/bool/None columns encode consistently."""
    array = np.asarray(values, dtype=object)
    out = array.astype(str).astype(object)
    out[pd.isna(array)] = np.nan
    return out


# A skops file is a zip archive: bounded before anything inside is read, so a crafted file (a zip bomb, or
# millions of members) cannot exhaust memory or time. A 500-tree forest has a few thousand members.
MAX_ARCHIVE_MEMBERS = 100_000
MAX_UNCOMPRESSED_BYTES = 4 * 1024**3


def check_archive(archive: zipfile.ZipFile) -> None:
    """Refuse an archive with too many members or too many bytes once uncompressed (sizes as declared,
    which zipfile then holds each member's reads to)."""
    members = archive.infolist()
    if len(members) > MAX_ARCHIVE_MEMBERS:
        raise ModelIOError(f"model file has {len(members)} archive members, over {MAX_ARCHIVE_MEMBERS}")
    total = sum(member.file_size for member in members)
    if total > MAX_UNCOMPRESSED_BYTES:
        raise ModelIOError(f"model file unpacks to {total} bytes, over {MAX_UNCOMPRESSED_BYTES}")


def model_types(data: bytes) -> set[str]:
    """Every type (module.name) referenced anywhere in a skops file."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            check_archive(archive)
            schema = json.loads(archive.read("schema.json"))
        # skops's own audit, which sees types the schema walk might not (e.g. via its loaders)
        found = set(sio.get_untrusted_types(data=data))
    except (zipfile.BadZipFile, KeyError, json.JSONDecodeError, ValueError, TypeError) as exc:
        raise ModelIOError(f"not a readable skops model file: {exc}") from exc
    _collect_types(schema, found)
    return found


def _collect_types(node: Any, found: set[str]) -> None:
    if isinstance(node, dict):
        module, name = node.get("__module__"), node.get("__class__")
        if isinstance(module, str) and isinstance(name, str):
            found.add(f"{module}.{name}")
        for value in node.values():
            _collect_types(value, found)
    elif isinstance(node, list):
        for value in node:
            _collect_types(value, found)


def untrusted_types(data: bytes) -> list[str]:
    """Types in a skops file that are not in TRUSTED_TYPES, sorted."""
    return sorted(model_types(data) - _TRUSTED)


def dump_model(model: Any) -> bytes:
    """Serialise a fitted model to skops bytes; refuses models that load_model would refuse."""
    try:
        data = sio.dumps(model)
    except (RecursionError, TypeError, ValueError, AttributeError) as exc:
        raise ModelIOError(f"model cannot be saved in the skops format: {exc!r}") from exc
    offending = untrusted_types(data)
    if offending:
        raise UntrustedModelError(offending)
    return data


def load_model(data: bytes) -> Any:
    """Load a model from skops bytes, only if every type inside is trusted."""
    offending = untrusted_types(data)
    if offending:
        raise UntrustedModelError(offending)
    try:
        return sio.loads(data, trusted=list(TRUSTED_TYPES))
    except UntrustedTypesFoundException as exc:
        raise ModelIOError(f"skops refused the model file: {exc}") from exc
    except (KeyError, ValueError, TypeError, AttributeError, ImportError) as exc:
        raise ModelIOError(f"model file cannot be loaded: {exc!r}") from exc
