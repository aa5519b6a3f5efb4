import io
import json
import os
import pickle
import zipfile

import numpy as np
import pandas as pd
import pytest
import skops.io as sio
from sklearn.compose import ColumnTransformer
from sklearn.datasets import make_classification, make_regression
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler
from sklearn.svm import SVC

from mloop_common import modelio
from mloop_common.modelio import (
    ModelIOError,
    UntrustedModelError,
    as_category_strings,
    dump_model,
    estimator_class,
    load_model,
    untrusted_types,
)
from mloop_common.spec import ESTIMATOR_ALLOWLIST

# Small ensembles keep the round-trip of every estimator fast; the fitted internals are the same kinds.
FAST_PARAMS = {
    "RandomForestClassifier": {"n_estimators": 5},
    "RandomForestRegressor": {"n_estimators": 5},
    "ExtraTreesClassifier": {"n_estimators": 5},
    "ExtraTreesRegressor": {"n_estimators": 5},
    "GradientBoostingClassifier": {"n_estimators": 5},
    "GradientBoostingRegressor": {"n_estimators": 5},
    "HistGradientBoostingClassifier": {"max_iter": 10},
    "HistGradientBoostingRegressor": {"max_iter": 10},
}


def standard_pipeline(estimator, numeric, categorical):
    """The same shape of pipeline the trainer builds."""
    return Pipeline(
        [
            (
                "preprocess",
                ColumnTransformer(
                    [
                        (
                            "numeric",
                            Pipeline([("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())]),
                            numeric,
                        ),
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
                        ),
                    ],
                    sparse_threshold=0.0,
                ),
            ),
            ("model", estimator),
        ]
    )


def frame_for(task, n_classes=2):
    rng = np.random.default_rng(7)
    if task == "classification":
        X, y = make_classification(120, 4, n_informative=3, n_redundant=0, n_classes=n_classes, random_state=7)
        y = np.array(["low", "mid", "high"])[y]
    else:
        X, y = make_regression(120, 4, random_state=7)
    frame = pd.DataFrame(X, columns=["a", "b", "c", "d"])
    frame.loc[::10, "a"] = np.nan
    frame["plan"] = rng.choice(["basic", "pro", None], len(frame))
    frame["active"] = rng.choice([True, False], len(frame))
    return frame, y


def fitted(name, n_classes=2):
    task = ESTIMATOR_ALLOWLIST[name].task
    estimator = estimator_class(name)(**FAST_PARAMS.get(name, {}))
    frame, y = frame_for(task, n_classes)
    model = standard_pipeline(estimator, ["a", "b", "c", "d"], ["plan", "active"]).fit(frame, y)
    return model, frame


@pytest.mark.parametrize("name", sorted(ESTIMATOR_ALLOWLIST))
def test_every_allowlisted_estimator_round_trips_and_predicts_identically(name):
    model, frame = fitted(name)

    loaded = load_model(dump_model(model))

    np.testing.assert_array_equal(loaded.predict(frame), model.predict(frame))
    if hasattr(model, "predict_proba"):
        np.testing.assert_allclose(loaded.predict_proba(frame), model.predict_proba(frame))


@pytest.mark.parametrize("name", ["HistGradientBoostingClassifier", "GradientBoostingClassifier", "LogisticRegression"])
def test_multiclass_models_round_trip(name):
    model, frame = fitted(name, n_classes=3)

    loaded = load_model(dump_model(model))

    np.testing.assert_allclose(loaded.predict_proba(frame), model.predict_proba(frame))


@pytest.mark.parametrize(
    "params",
    [
        {"algorithm": "ball_tree", "metric": "manhattan"},
        {"algorithm": "kd_tree", "p": 3},
        {"algorithm": "brute", "metric": "chebyshev", "weights": "distance"},
    ],
)
def test_neighbour_indexes_of_every_algorithm_round_trip(params):
    frame, y = frame_for("regression")
    model = standard_pipeline(estimator_class("KNeighborsRegressor")(**params), ["a", "b"], ["plan"]).fit(frame, y)

    np.testing.assert_allclose(load_model(dump_model(model)).predict(frame), model.predict(frame))


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("HistGradientBoostingRegressor", {"loss": "absolute_error"}),
        ("HistGradientBoostingRegressor", {"loss": "poisson"}),
        ("HistGradientBoostingRegressor", {"loss": "gamma"}),
        ("HistGradientBoostingRegressor", {"loss": "quantile", "quantile": 0.9}),
        ("GradientBoostingRegressor", {"loss": "huber"}),
        ("GradientBoostingRegressor", {"loss": "quantile"}),
    ],
)
def test_boosting_with_non_default_losses_round_trips(name, params):
    frame, y = frame_for("regression")
    y = np.abs(y) + 1.0
    estimator = estimator_class(name)(**params, **FAST_PARAMS[name])
    model = standard_pipeline(estimator, ["a", "b"], ["plan"]).fit(frame, y)

    np.testing.assert_allclose(load_model(dump_model(model)).predict(frame), model.predict(frame))


def test_a_fitted_sklearn_model_outside_the_allowlist_is_refused():
    X, y = make_classification(60, 4, random_state=0)
    data = sio.dumps(SVC().fit(X, y))

    with pytest.raises(UntrustedModelError, match=r"sklearn\.svm\._classes\.SVC"):
        load_model(data)


def test_a_pipeline_hiding_an_arbitrary_function_is_refused():
    sneaky = Pipeline([("shell", FunctionTransformer(os.system)), ("model", estimator_class("GaussianNB")())])
    data = sio.dumps(sneaky)

    with pytest.raises(UntrustedModelError) as caught:
        load_model(data)

    assert f"{os.system.__module__}.system" in caught.value.types


def test_refused_types_are_listed_without_loading():
    X, y = make_classification(60, 4, random_state=0)

    assert untrusted_types(sio.dumps(SVC().fit(X, y))) == ["sklearn.svm._classes.SVC"]


def test_dump_refuses_a_model_that_could_not_be_loaded_back():
    X, y = make_classification(60, 4, random_state=0)

    with pytest.raises(UntrustedModelError):
        dump_model(SVC().fit(X, y))


def test_bytes_that_are_not_a_model_file_are_refused():
    with pytest.raises(ModelIOError, match="not a readable skops model file"):
        load_model(b"\x80\x04\x95 definitely a pickle")


def test_category_strings_make_mixed_columns_uniform_and_keep_missing():
    out = as_category_strings(pd.DataFrame({"x": [True, None, 3, "a", np.nan]}))

    assert out[:, 0][[0, 2, 3]].tolist() == ["True", "3", "a"]
    assert pd.isna(out[1, 0]) and pd.isna(out[4, 0])


def test_every_allowlisted_estimator_can_be_imported():
    for name in ESTIMATOR_ALLOWLIST:
        assert estimator_class(name).__name__ == name


@pytest.mark.parametrize("name", sorted(ESTIMATOR_ALLOWLIST))
def test_the_spec_knows_every_constructor_parameter_of_the_installed_scikit_learn(name):
    installed = set(estimator_class(name)().get_params(deep=False))

    assert set(ESTIMATOR_ALLOWLIST[name].params) == installed


class _WritesMarker:
    """Would create ``path`` if anything ever unpickled it."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (os.system, (f"touch {self.path}",))


def test_hostile_model_files_are_refused_without_running_anything(tmp_path):
    marker = tmp_path / "marker"
    pickled = pickle.dumps(_WritesMarker(str(marker)))
    # the same payload inside a skops archive, as the member a loader would unpickle
    X, y = make_classification(60, 4, random_state=0)
    original = zipfile.ZipFile(io.BytesIO(sio.dumps(estimator_class("GaussianNB")().fit(X, y))))
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zipped:
        for member in original.namelist():
            body = original.read(member)
            if member == "schema.json":
                schema = json.loads(body)
                schema["content"]["smuggled"] = {
                    "__class__": "_WritesMarker",
                    "__module__": __name__,
                    "__loader__": "ReduceNode",
                }
                body = json.dumps(schema).encode()
            zipped.writestr(member, body)
        zipped.writestr("smuggled.pkl", pickled)

    for hostile in (pickled, archive.getvalue()):
        with pytest.raises(ModelIOError):
            load_model(hostile)

    assert not marker.exists()


def test_an_archive_too_large_once_unpacked_or_with_too_many_members_is_refused_before_reading(monkeypatch):
    X, y = make_classification(60, 4, random_state=0)
    data = dump_model(estimator_class("GaussianNB")().fit(X, y))
    bomb = io.BytesIO(data)
    with zipfile.ZipFile(bomb, "a", compression=zipfile.ZIP_DEFLATED) as zipped:
        zipped.writestr("zeros.npy", b"\0" * (8 * 1024 * 1024))  # 8 MiB that compresses to a few KiB

    monkeypatch.setattr(modelio, "MAX_UNCOMPRESSED_BYTES", 4 * 1024 * 1024)
    with pytest.raises(ModelIOError, match="unpacks to"):
        load_model(bomb.getvalue())
    monkeypatch.setattr(modelio, "MAX_ARCHIVE_MEMBERS", 2)
    with pytest.raises(ModelIOError, match="archive members"):
        load_model(data)
