import io
import json

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import make_classification

from mloop_common.modelio import load_model
from mloop_common.profile import ReferenceProfile
from mloop_common.spec import ModelSpec
from mloop_trainer.jobs import combine_with_recent, run_training_job
from mloop_trainer.training import TrainingError


def spec_body(**overrides):
    body = {
        "name": "churn",
        "dataset": "churn",
        "task": "classification",
        "target": "churned",
        "metric": "accuracy",
        "estimators": [{"class": "LogisticRegression", "params": {"C": [0.1, 1.0]}}],
        "search": {"strategy": "grid", "cv": 2},
    }
    body.update(overrides)
    return body


def make_spec(history_rows=None, **overrides):
    return ModelSpec.model_validate(spec_body(retrain={"history_rows": history_rows}, **overrides))


def history(days=(1, 2, 3, 4)):
    """Dataset rows; usage encodes the day so tests can tell rows apart."""
    return pd.DataFrame(
        {
            "usage": [float(d) for d in days],
            "plan": ["basic"] * len(days),
            "day": list(days),
            "churned": ["no", "yes"] * (len(days) // 2) + ["no"] * (len(days) % 2),
        }
    )


def recent(usages=(100.0, 200.0), **extra):
    return pd.DataFrame(
        {"usage": list(usages), "plan": ["pro"] * len(usages), "churned": ["yes"] * len(usages), **extra}
    )


def classification_parquet(rows=160, seed=0):
    X, y = make_classification(rows, 3, n_informative=2, n_redundant=0, random_state=seed)
    frame = pd.DataFrame(X, columns=["usage", "age", "tenure"])
    frame["plan"] = np.random.default_rng(seed).choice(["basic", "pro"], rows)
    frame["churned"] = np.array(["no", "yes"])[y]
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    return buffer.getvalue(), frame


def test_recent_rows_come_after_history():
    combined = combine_with_recent(history(), recent(), make_spec())

    assert combined["usage"].tolist() == [1.0, 2.0, 3.0, 4.0, 100.0, 200.0]
    assert combined.index.tolist() == list(range(6))


def test_all_history_is_kept_by_default():
    combined = combine_with_recent(history(), recent(), make_spec(time_column="day"))

    assert combined["usage"].tolist()[:4] == [1.0, 2.0, 3.0, 4.0]


def test_zero_history_rows_trains_on_recent_rows_only():
    combined = combine_with_recent(history(), recent(), make_spec(history_rows=0))

    assert combined["usage"].tolist() == [100.0, 200.0]


def test_history_rows_keeps_the_newest_rows_by_time():
    combined = combine_with_recent(history(days=(4, 1, 3, 2)), recent(), make_spec(history_rows=2, time_column="day"))

    assert combined["usage"].tolist() == [3.0, 4.0, 100.0, 200.0]


def test_history_rows_without_a_time_column_keeps_the_last_rows():
    combined = combine_with_recent(history(days=(4, 1, 3, 2)), recent(), make_spec(history_rows=3))

    assert combined["usage"].tolist() == [1.0, 3.0, 2.0, 100.0, 200.0]


def test_history_rows_larger_than_the_dataset_keeps_it_all():
    combined = combine_with_recent(history(), recent(), make_spec(history_rows=1000))

    assert combined["usage"].tolist() == [1.0, 2.0, 3.0, 4.0, 100.0, 200.0]


def test_recent_rows_without_time_get_times_after_the_newest_historical_row():
    combined = combine_with_recent(history(days=(10, 30, 20)), recent(), make_spec(time_column="day"))

    assert combined["day"].tolist() == [10, 30, 20, 31, 32]
    assert combined["day"].dtype == np.int64


def test_recent_rows_without_time_get_timestamps_after_the_newest_historical_row():
    frame = history().assign(day=pd.to_datetime(["2024-01-01", "2024-01-03", "2024-01-02", "2024-01-04"]))

    combined = combine_with_recent(frame, recent(), make_spec(time_column="day"))

    newest = pd.Timestamp("2024-01-04")
    assert combined["day"].iloc[4:].tolist() == [newest + pd.Timedelta(seconds=1), newest + pd.Timedelta(seconds=2)]


def test_recent_rows_that_carry_a_time_keep_it():
    combined = combine_with_recent(history(), recent(day=[50, 60]), make_spec(time_column="day"))

    assert combined["day"].tolist() == [1, 2, 3, 4, 50, 60]


def test_recent_rows_without_a_label_are_dropped():
    rows = recent(usages=(100.0, 200.0, 300.0)).assign(churned=["yes", None, "no"])

    combined = combine_with_recent(history(), rows, make_spec())

    assert combined["usage"].tolist() == [1.0, 2.0, 3.0, 4.0, 100.0, 300.0]


def test_recent_columns_the_dataset_lacks_are_dropped_and_missing_ones_left_empty():
    rows = recent().drop(columns="plan").assign(request_id=["r1", "r2"], route="champion")

    combined = combine_with_recent(history(), rows, make_spec())

    assert list(combined.columns) == ["usage", "plan", "day", "churned"]
    assert combined["plan"].iloc[4:].isna().all()


def test_recent_rows_without_the_target_column_cannot_train():
    with pytest.raises(TrainingError, match="no target column 'churned'"):
        combine_with_recent(history(), recent().drop(columns="churned"), make_spec())


def test_training_job_returns_a_loadable_model_and_json_ready_records():
    dataset, frame = classification_parquet()
    features = ["usage", "age", "plan"]

    result = run_training_job(spec_body(features=features), dataset, None)

    model = load_model(result.model)
    holdout = pd.read_parquet(io.BytesIO(result.holdout))
    report = result.report
    assert set(model.predict(frame[features].head(5))) <= {"no", "yes"}
    assert len(holdout) == report.holdout_rows == 32 and report.train_rows == 128
    assert set(features + ["churned"]) <= set(holdout.columns)
    profile = ReferenceProfile.from_json(result.profile)
    assert set(profile.features) == set(features)
    # drift calibrates its label-free estimate on the held-out probabilities and labels
    assert profile.evaluation is not None and profile.evaluation.classes == ["no", "yes"]
    assert profile.evaluation.labels == holdout["churned"].tolist()
    expected = model.predict_proba(holdout[features])
    assert np.allclose(profile.evaluation.probabilities, expected, atol=1e-6)
    assert report.features == features and report.estimator_class == "LogisticRegression"
    assert report.params["C"] in (0.1, 1.0) and report.recent_rows == 0
    assert 0.0 <= report.holdout_metrics["accuracy"] <= 1.0
    json.dumps(
        report.model_dump(
            include={"params", "holdout_metrics", "candidates", "timings", "library_versions", "cv_score"}
        ),
        allow_nan=False,
    )


def test_training_job_learns_from_recent_rows_too():
    dataset, frame = classification_parquet(rows=120)
    recent_rows = frame.sample(40, random_state=1).drop(columns="age")
    buffer = io.BytesIO()
    recent_rows.to_parquet(buffer, index=False)

    result = run_training_job(spec_body(features=["usage", "plan"]), dataset, buffer.getvalue())

    assert result.report.recent_rows == 40
    assert result.report.train_rows + result.report.holdout_rows == 160
