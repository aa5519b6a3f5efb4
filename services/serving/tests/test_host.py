import json
import math

import numpy as np
import pandas as pd
import pytest
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import Pipeline

from mloop_common.errors import InvalidInput, NotFound
from mloop_common.profile import CategoricalProfile, NumericProfile, ReferenceProfile
from mloop_serving.host import LoadedModel, ModelHost, warmup_instance


def fitted_classifier(labels=("no", "yes")):
    """LogisticRegression on two numeric features; missing values are imputed like the trainer does."""
    rng = np.random.default_rng(0)
    X = pd.DataFrame({"usage": rng.normal(size=80), "calls": rng.normal(size=80)})
    y = np.where(X["usage"] + X["calls"] > 0, labels[1], labels[0])
    return Pipeline([("impute", SimpleImputer()), ("model", LogisticRegression())]).fit(X, y)


def loaded(version=1, name="churn", estimator=None, task="classification", labels=("no", "yes")):
    return LoadedModel(
        name=name,
        version=version,
        task=task,
        features=["usage", "calls"],
        kinds={"usage": "numeric", "calls": "numeric"},
        estimator=estimator if estimator is not None else fitted_classifier(labels),
        classes=list(labels),
    )


def test_frame_has_the_model_features_in_order():
    frame = loaded().frame([{"calls": 2, "usage": 1.5}, {"usage": -1, "calls": 0.5}])

    assert list(frame.columns) == ["usage", "calls"]
    assert frame.to_dict("list") == {"usage": [1.5, -1.0], "calls": [2.0, 0.5]}
    assert all(dtype == np.float64 for dtype in frame.dtypes)


def test_frame_ignores_keys_that_are_not_features():
    frame = loaded().frame([{"usage": 1.0, "calls": 2.0, "customer": "c-17"}])

    assert list(frame.columns) == ["usage", "calls"]


def test_null_numeric_value_becomes_nan():
    frame = loaded().frame([{"usage": None, "calls": 1.0}])

    assert math.isnan(frame.loc[0, "usage"])


def test_missing_feature_is_invalid_and_names_instance_and_feature():
    with pytest.raises(InvalidInput, match="lacks feature 'calls'") as caught:
        loaded().frame([{"usage": 1.0, "calls": 1.0}, {"usage": 2.0}])

    assert caught.value.field == "instances[1].calls"


@pytest.mark.parametrize("value", ["3.5", "many", True, [1.0], {"v": 1}])
def test_non_number_in_numeric_feature_is_invalid_and_names_it(value):
    with pytest.raises(InvalidInput, match="must be a number or null") as caught:
        loaded().frame([{"usage": 1.0, "calls": 1.0}, {"usage": 1.0, "calls": 1.0}, {"usage": value, "calls": 1.0}])

    assert caught.value.field == "instances[2].usage"


@pytest.mark.parametrize("instance", [[1.0, 2.0], "usage=1", None, 3])
def test_instance_that_is_not_an_object_is_invalid_and_names_it(instance):
    with pytest.raises(InvalidInput, match="must be an object") as caught:
        loaded().frame([{"usage": 1.0, "calls": 1.0}, instance])

    assert caught.value.field == "instances[1]"


def test_categorical_feature_accepts_text():
    model = LoadedModel(
        name="churn", version=1, task="classification", features=["plan"], kinds={"plan": "categorical"}, estimator=None
    )

    plan = model.frame([{"plan": "pro"}, {"plan": None}])["plan"]

    assert plan[0] == "pro" and pd.isna(plan[1])


def test_predictions_and_probabilities_are_plain_python_values():
    model = loaded()

    predictions, probabilities = model.predict(
        model.frame([{"usage": 3.0, "calls": 3.0}, {"usage": -3.0, "calls": None}])
    )

    assert predictions == ["yes", "no"]
    assert all(type(p) is float for row in probabilities for p in row)
    assert [round(sum(row), 9) for row in probabilities] == [1.0, 1.0]
    json.dumps({"predictions": predictions, "probabilities": probabilities})


def test_integer_labels_come_back_as_python_ints():
    model = loaded(labels=(0, 1))

    predictions, _ = model.predict(model.frame([{"usage": 3.0, "calls": 3.0}]))

    assert predictions == [1] and type(predictions[0]) is int


def test_regression_has_no_probabilities():
    X = pd.DataFrame({"usage": [0.0, 1.0, 2.0, 3.0], "calls": [1.0, 0.0, 1.0, 0.0]})
    model = loaded(task="regression", estimator=LinearRegression().fit(X, [0.0, 2.0, 4.0, 6.0]))

    predictions, probabilities = model.predict(model.frame([{"usage": 4.0, "calls": 1.0}]))

    assert probabilities is None
    assert type(predictions[0]) is float and predictions[0] == pytest.approx(8.0)


def numeric(mean: float | None) -> NumericProfile:
    return NumericProfile(
        missing_rate=0, min=None, max=None, mean=mean, std=None, bin_edges=[0, 1], bin_fractions=[1], sample=[]
    )


def test_warmup_instance_is_a_typical_row_of_the_profile():
    profile = ReferenceProfile(
        rows=10,
        features={
            "usage": numeric(mean=12.5),
            "plan": CategoricalProfile(missing_rate=0, frequencies={"basic": 0.2, "pro": 0.7, "team": 0.1}),
            "region": CategoricalProfile(missing_rate=0, frequencies={}),
        },
    )

    row = warmup_instance(profile, ["usage", "plan", "region", "unprofiled"])

    assert row == {"usage": 12.5, "plan": "pro", "region": None, "unprofiled": None}


def test_warmup_instance_can_be_predicted():
    model = loaded()
    profile = ReferenceProfile(rows=10, features={"usage": numeric(mean=0.1), "calls": numeric(mean=None)})

    predictions, _ = model.predict(model.frame([warmup_instance(profile, model.features)]))

    assert predictions[0] in ("no", "yes")


def test_host_without_the_model_is_not_found():
    with pytest.raises(NotFound, match="'churn'"):
        ModelHost().get("churn")


def test_host_serving_another_version_is_not_found():
    host = ModelHost()
    host.swap(loaded(version=2))

    with pytest.raises(NotFound, match=r"version 1 is not loaded; loaded versions: \[2\]"):
        host.get("churn", 1)


def test_swap_serves_the_new_version_and_returns_the_previous():
    host = ModelHost()
    first, second = loaded(version=1), loaded(version=2)

    assert host.swap(first) is None
    assert host.swap(second) is first
    assert host.get("churn") is second
    assert host.get("churn", 2) is second
    assert host.current_version("churn") == 2


def test_host_serves_models_independently():
    host = ModelHost()
    host.swap(loaded(name="churn", version=4))
    host.swap(loaded(name="fraud", version=1))

    assert host.names() == ["churn", "fraud"]
    assert (host.current_version("churn"), host.current_version("fraud"), host.current_version("spam")) == (4, 1, None)
