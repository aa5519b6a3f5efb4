import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_diabetes, make_classification

from mloop_common.modelio import dump_model, estimator_class, load_model
from mloop_common.spec import ModelSpec
from mloop_trainer.training import (
    TrainingError,
    build_pipeline,
    resolve_features,
    split_holdout,
    train,
)


def churn_frame(rows=300, seed=0, n_classes=2):
    """A classification frame with numeric, categorical, boolean and time columns and some gaps."""
    X, y = make_classification(rows, 4, n_informative=3, n_redundant=0, n_classes=n_classes, random_state=seed)
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(X, columns=["usage", "age", "tenure", "calls"])
    frame["plan"] = rng.choice(["basic", "pro", "team", None], rows)
    frame["promo"] = rng.choice([True, False], rows)
    frame["signup_ts"] = pd.Timestamp("2024-01-01") + pd.to_timedelta(rng.permutation(rows), unit="D")
    frame["churned"] = np.array(["no", "yes", "maybe"])[y]
    frame.loc[frame.index[::17], "usage"] = np.nan
    return frame


def diabetes_frame():
    data = load_diabetes(as_frame=True).frame
    data["sex"] = np.where(data["sex"] > 0, "m", "f")
    return data


def make_spec(**overrides):
    spec = {
        "name": "churn",
        "dataset": "churn",
        "task": "classification",
        "target": "churned",
        "metric": "roc_auc",
        "estimators": [
            {"class": "LogisticRegression", "params": {"C": [0.1, 1.0]}},
            {"class": "RandomForestClassifier", "params": {"n_estimators": [10], "max_depth": [3, None]}},
        ],
        "search": {"strategy": "grid", "cv": 3},
        "holdout": 0.2,
        "seed": 42,
    }
    spec.update(overrides)
    return ModelSpec.model_validate(spec)


def regression_spec(**overrides):
    return make_spec(
        **{
            "name": "diabetes",
            "dataset": "diabetes",
            "task": "regression",
            "target": "target",
            "metric": "rmse",
            "estimators": [
                {"class": "Ridge", "params": {"alpha": [0.1, 10.0]}},
                {"class": "DecisionTreeRegressor", "params": {"max_depth": [2, 4]}},
            ],
            **overrides,
        }
    )


def test_time_split_holds_out_the_newest_rows():
    frame = churn_frame()
    spec = make_spec(time_column="signup_ts")

    train_part, holdout = split_holdout(frame, spec)

    assert len(holdout) == 60 and len(train_part) == 240
    assert train_part["signup_ts"].max() < holdout["signup_ts"].min()
    assert holdout["signup_ts"].is_monotonic_increasing


def test_time_split_accepts_iso_timestamps_as_text():
    frame = churn_frame(rows=100)
    frame["signup_ts"] = frame["signup_ts"].dt.strftime("%Y-%m-%dT%H:%M:%S")

    train_part, holdout = split_holdout(frame, make_spec(time_column="signup_ts", holdout=0.1))

    assert train_part["signup_ts"].max() < holdout["signup_ts"].min()


def test_shuffled_split_is_deterministic_disjoint_and_stratified():
    frame = churn_frame().reset_index(names="row_id")
    spec = make_spec()

    train_a, holdout_a = split_holdout(frame, spec)
    train_b, holdout_b = split_holdout(frame, spec)

    pd.testing.assert_frame_equal(holdout_a, holdout_b)
    assert set(train_a["row_id"]).isdisjoint(holdout_a["row_id"])
    assert len(train_a) + len(holdout_a) == len(frame)
    overall = frame["churned"].value_counts(normalize=True)
    held = holdout_a["churned"].value_counts(normalize=True)
    assert (held - overall).abs().max() < 0.03


def test_a_different_seed_holds_out_different_rows():
    frame = churn_frame().reset_index(names="row_id")

    _, first = split_holdout(frame, make_spec(seed=1))
    _, second = split_holdout(frame, make_spec(seed=2))

    assert set(first["row_id"]) != set(second["row_id"])


def test_rows_without_a_label_are_dropped_before_splitting():
    frame = churn_frame()
    frame.loc[frame.index[:30], "churned"] = None

    train_part, holdout = split_holdout(frame, make_spec())

    assert len(train_part) + len(holdout) == 270
    assert train_part["churned"].notna().all() and holdout["churned"].notna().all()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda f: f.drop(columns="churned"), "target column 'churned' is not in the data"),
        (lambda f: f.assign(churned=None), "target column 'churned' has no values"),
        (lambda f: f.head(1), "too few"),
    ],
)
def test_split_refuses_data_it_cannot_split(change, message):
    with pytest.raises(TrainingError, match=message):
        split_holdout(change(churn_frame()), make_spec())


def test_missing_time_column_is_named():
    with pytest.raises(TrainingError, match="time_column 'signup_ts'"):
        split_holdout(churn_frame().drop(columns="signup_ts"), make_spec(time_column="signup_ts"))


def test_default_features_are_all_columns_but_target_and_time():
    features = resolve_features(churn_frame(), make_spec(time_column="signup_ts"))

    assert features == ["usage", "age", "tenure", "calls", "plan", "promo"]


def test_declared_features_missing_from_the_data_are_named():
    spec = make_spec(features=["usage", "income", "region"])

    with pytest.raises(TrainingError, match="income, region"):
        resolve_features(churn_frame(), spec)


def test_pipeline_handles_missing_values_and_unseen_categories():
    frame = churn_frame()
    features = ["usage", "age", "plan", "promo"]
    model = build_pipeline(estimator_class("LogisticRegression")(), frame, features)

    model.fit(frame[features], frame["churned"])
    unseen = pd.DataFrame({"usage": [np.nan], "age": [0.1], "plan": ["enterprise"], "promo": [None]})

    assert model.named_steps["model"].__class__.__name__ == "LogisticRegression"
    assert model.predict(unseen)[0] in {"no", "yes"}


def test_gradient_boosting_takes_numbers_as_they_are_and_its_model_loads_with_the_trusted_types():
    frame = churn_frame()
    features = ["usage", "age", "plan", "promo"]
    boosted = build_pipeline(estimator_class("HistGradientBoostingClassifier")(random_state=0), frame, features)
    linear = build_pipeline(estimator_class("LogisticRegression")(), frame, features)

    boosted.fit(frame[features], frame["churned"])
    loaded = load_model(dump_model(boosted))
    with_gap = pd.DataFrame({"usage": [np.nan, 1.5], "age": [0.1, -0.3], "plan": ["pro", None], "promo": [True, None]})

    def numbers(model):
        return {name: step for name, step, _ in model.named_steps["preprocess"].transformers}["numeric"]

    assert numbers(boosted) == "passthrough"  # no imputing or scaling in each fold: the booster does without
    assert numbers(linear) != "passthrough"
    assert list(loaded.predict(with_gap)) == list(boosted.predict(with_gap))
    np.testing.assert_allclose(loaded.predict_proba(with_gap), boosted.predict_proba(with_gap))


def test_training_picks_the_best_candidate_and_reports_every_one():
    frame = churn_frame()
    spec = make_spec()

    result = train(spec, frame)

    assert len(result.candidates) == 4
    scores = [c["mean_score"] for c in result.candidates]
    assert result.cv_score == pytest.approx(max(scores))
    best = result.candidates[scores.index(max(scores))]
    assert (result.estimator_class, result.best_params) == (best["class"], best["params"])
    assert result.classes == ["no", "yes"]
    assert result.train_rows == 240 and len(result.holdout) == 60
    assert set(result.timings) == {"search_s", "refit_s", "total_s"}
    assert {"sklearn", "numpy", "pandas", "python"} <= set(result.library_versions)


def test_estimators_are_seeded_from_the_spec_unless_it_sets_random_state():
    seeded = train(make_spec(estimators=[{"class": "DecisionTreeClassifier"}], seed=7), churn_frame())
    explicit = train(
        make_spec(estimators=[{"class": "DecisionTreeClassifier", "params": {"random_state": [3]}}]), churn_frame()
    )

    assert seeded.model.named_steps["model"].random_state == 7
    assert explicit.model.named_steps["model"].random_state == 3


def test_the_holdout_is_never_used_for_fitting():
    frame = churn_frame()
    spec = make_spec(estimators=[{"class": "KNeighborsClassifier", "params": {"n_neighbors": [1]}}])

    result = train(spec, frame)

    # A 1-nearest-neighbour model memorises its training rows: they score perfectly, the holdout does not.
    features = result.features
    assert (result.model.predict(result.train[features]) == result.train["churned"]).all()
    assert (result.model.predict(result.holdout[features]) != result.holdout["churned"]).any()
    assert result.model.named_steps["model"].n_samples_fit_ == 240


def test_two_runs_with_the_same_seed_give_the_same_model():
    frame = churn_frame()
    spec = make_spec(search={"strategy": "random", "n_iter": 3, "cv": 3})

    first, second = train(spec, frame), train(spec, frame)

    assert (first.estimator_class, first.best_params, first.cv_score) == (
        second.estimator_class,
        second.best_params,
        second.cv_score,
    )
    assert first.candidates == second.candidates
    np.testing.assert_array_equal(first.model.predict_proba(first.holdout), second.model.predict_proba(second.holdout))


def test_random_search_tries_at_most_n_iter_combinations_per_estimator():
    spec = make_spec(
        estimators=[{"class": "LogisticRegression", "params": {"C": [0.01, 0.1, 1.0, 10.0, 100.0]}}],
        search={"strategy": "random", "n_iter": 2, "cv": 3},
    )

    result = train(spec, churn_frame())

    assert len(result.candidates) == 2


def test_halving_search_reports_the_rows_each_candidate_reached():
    spec = make_spec(
        estimators=[{"class": "DecisionTreeClassifier", "params": {"max_depth": [1, 2, 3, 5, 8, None]}}],
        search={"strategy": "halving", "cv": 3},
    )

    result = train(spec, churn_frame(rows=400))

    assert len(result.candidates) == 6
    reached = [c["n_resources"] for c in result.candidates]
    assert max(reached) > min(reached)
    assert result.best_params["max_depth"] in {1, 2, 3, 5, 8, None}


def test_regression_reports_rmse_as_its_natural_positive_value_and_picks_the_lowest():
    result = train(regression_spec(), diabetes_frame())

    scores = [c["mean_score"] for c in result.candidates]
    assert all(s > 0 for s in scores)
    assert result.cv_score == pytest.approx(min(scores))
    assert result.classes is None


def test_time_ordered_training_trains_on_the_past():
    frame = churn_frame()

    result = train(make_spec(time_column="signup_ts"), frame)

    assert "signup_ts" not in result.features
    assert result.train["signup_ts"].max() < result.holdout["signup_ts"].min()


@pytest.mark.parametrize("metric", ["f1", "log_loss", "balanced_accuracy"])
def test_every_classification_metric_can_drive_the_search(metric):
    result = train(make_spec(metric=metric), churn_frame())

    assert all(c["mean_score"] is not None for c in result.candidates)


def test_multiclass_roc_auc_search():
    result = train(make_spec(), churn_frame(n_classes=3))

    assert result.classes == ["maybe", "no", "yes"]
    assert 0.5 < result.cv_score <= 1.0


def test_progress_counts_parameter_combinations_tried_out_of_those_planned():
    reports = []
    spec = make_spec()  # LogisticRegression with 2 values of C, RandomForestClassifier with 2 of max_depth

    train(spec, churn_frame(), progress=reports.append)

    stages = [r.stage for r in reports]
    assert {r.trials_total for r in reports} == {4}
    done = [r.trials_done for r in reports]
    assert done == sorted(done) and done[0] == 0 and done[-1] == 4
    assert {1, 2, 3} <= set(done)  # moved per combination, not only per estimator
    assert any(s.startswith("LogisticRegression: searching 2") for s in stages)
    assert any(s.startswith("RandomForestClassifier: best roc_auc=") for s in stages)
    assert stages[-1].startswith("refitting ")


def test_a_candidate_whose_every_fit_fails_does_not_sink_the_run():
    spec = make_spec(
        estimators=[
            {"class": "LogisticRegression", "params": {"C": [-1.0]}},
            {"class": "GaussianNB"},
        ]
    )

    result = train(spec, churn_frame())

    assert result.estimator_class == "GaussianNB"
    failed = result.candidates[0]
    assert failed["class"] == "LogisticRegression" and failed["mean_score"] is None
    assert "C" in failed["error"]


def test_training_fails_clearly_when_no_candidate_fits():
    spec = make_spec(estimators=[{"class": "LogisticRegression", "params": {"C": [-1.0]}}])

    with pytest.raises(TrainingError, match="no candidate estimator could be fitted"):
        train(spec, churn_frame())


def test_a_single_class_cannot_be_trained():
    frame = churn_frame().assign(churned="no")

    with pytest.raises(TrainingError, match="single class"):
        train(make_spec(), frame)


def test_trained_model_survives_the_safe_model_format():
    result = train(make_spec(), churn_frame())

    loaded = load_model(dump_model(result.model))

    np.testing.assert_allclose(loaded.predict_proba(result.holdout), result.model.predict_proba(result.holdout))
