import json
import math

import numpy as np
import pandas as pd
import pytest

from mloop_common.profile import (
    ReferenceProfile,
    build_reference_profile,
    class_key,
    evaluation_set,
    feature_kind,
    histogram_fractions,
    profile_entry,
)

NUMERIC_KEYS = {"kind", "missing_rate", "min", "max", "mean", "std", "bin_edges", "bin_fractions", "sample"}
CATEGORICAL_KEYS = {"kind", "missing_rate", "frequencies"}


def training_frame(rows=500, seed=3):
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "age": rng.normal(40, 10, rows),
            "visits": rng.integers(0, 30, rows),
            "plan": rng.choice(["basic", "pro", "team"], rows, p=[0.6, 0.3, 0.1]),
            "active": rng.choice([True, False], rows),
        }
    )
    frame.loc[frame.index[:50], "age"] = np.nan
    return frame


def test_profile_has_exactly_the_documented_shape():
    profile = build_reference_profile(training_frame(), ["age", "visits", "plan", "active"]).model_dump()

    assert set(profile) == {"schema_version", "rows", "features", "prediction", "evaluation", "contract"}
    assert profile["schema_version"] == 1
    assert profile["rows"] == 500
    assert profile["prediction"] is None and profile["evaluation"] is None and profile["contract"] is None
    assert set(profile["features"]["age"]) == NUMERIC_KEYS
    assert set(profile["features"]["plan"]) == CATEGORICAL_KEYS
    assert profile["features"]["active"]["kind"] == "categorical"


def test_profile_is_strict_json_with_plain_types():
    frame = training_frame()
    frame["empty"] = np.nan

    profile = build_reference_profile(frame, ["age", "plan", "empty"], predictions=np.zeros(len(frame))).model_dump()

    text = json.dumps(profile, allow_nan=False)
    assert json.loads(text) == profile
    assert ReferenceProfile.from_json(ReferenceProfile.model_validate(profile).to_json()).model_dump() == profile


def test_numeric_entry_describes_the_non_missing_values():
    entry = build_reference_profile(training_frame(), ["age"]).model_dump()["features"]["age"]
    values = training_frame()["age"].dropna()

    assert entry["missing_rate"] == pytest.approx(0.1)
    assert entry["min"] == pytest.approx(values.min())
    assert entry["max"] == pytest.approx(values.max())
    assert entry["mean"] == pytest.approx(values.mean())
    assert entry["std"] == pytest.approx(values.std(ddof=0))


def test_bin_edges_are_deciles_and_fractions_sum_to_one():
    entry = profile_entry(pd.Series(np.arange(1000, dtype=float))).model_dump()

    assert len(entry["bin_edges"]) == 11
    assert all(b > a for a, b in zip(entry["bin_edges"], entry["bin_edges"][1:], strict=False))
    assert len(entry["bin_fractions"]) == 10
    assert entry["bin_fractions"] == pytest.approx([0.1] * 10)
    assert sum(entry["bin_fractions"]) == pytest.approx(1.0)


def test_repeated_values_give_fewer_unique_edges():
    entry = profile_entry(pd.Series([0] * 80 + [1] * 10 + [2] * 10)).model_dump()

    assert entry["bin_edges"] == sorted(set(entry["bin_edges"]))
    assert len(entry["bin_fractions"]) == len(entry["bin_edges"]) - 1
    assert sum(entry["bin_fractions"]) == pytest.approx(1.0)


def test_a_constant_column_still_has_two_edges_around_its_value():
    entry = profile_entry(pd.Series([5.0] * 20)).model_dump()

    low, high = entry["bin_edges"]
    assert low < 5.0 < high
    assert entry["bin_fractions"] == [1.0]
    assert entry["std"] == 0.0


def test_an_all_missing_numeric_column_has_nulls_not_nan():
    entry = profile_entry(pd.Series([np.nan, np.nan, np.inf], dtype=float)).model_dump()

    assert entry["missing_rate"] == 1.0
    assert entry["min"] is None and entry["mean"] is None and entry["std"] is None
    assert len(entry["bin_edges"]) == 2
    assert entry["bin_fractions"] == [0.0]
    assert entry["sample"] == []


def test_sample_is_capped_seeded_and_drawn_from_the_data():
    series = pd.Series(np.arange(5000, dtype=float))

    first = profile_entry(series, sample_size=100, seed=1).model_dump()["sample"]
    again = profile_entry(series, sample_size=100, seed=1).model_dump()["sample"]
    other = profile_entry(series, sample_size=100, seed=2).model_dump()["sample"]

    assert len(first) == 100 and len(set(first)) == 100
    assert first == again
    assert first != other
    assert set(first) <= set(series)


def test_categorical_frequencies_are_fractions_of_non_missing_values():
    entry = profile_entry(pd.Series(["a", "a", "b", None])).model_dump()

    assert entry == {"kind": "categorical", "missing_rate": 0.25, "frequencies": {"a": 2 / 3, "b": 1 / 3}}


def test_categories_beyond_the_top_fifty_are_merged_into_other():
    values = [f"c{i:03d}" for i in range(60) for _ in range(60 - i)]

    frequencies = profile_entry(pd.Series(values)).model_dump()["frequencies"]

    assert len(frequencies) == 51
    assert "c000" in frequencies and "c059" not in frequencies
    assert frequencies["__other__"] == pytest.approx(sum(range(1, 11)) / len(values))
    assert sum(frequencies.values()) == pytest.approx(1.0)


def test_classifier_predictions_are_categorical_even_when_numeric():
    frame = training_frame(rows=100)

    profile = build_reference_profile(
        frame, ["age"], predictions=np.array([0, 1] * 50), task="classification"
    ).model_dump()

    assert profile["prediction"] == {"kind": "categorical", "missing_rate": 0.0, "frequencies": {"0": 0.5, "1": 0.5}}


def test_regression_predictions_are_numeric():
    frame = training_frame(rows=100)

    profile = build_reference_profile(
        frame, ["age"], predictions=np.linspace(0, 1, 100), task="regression"
    ).model_dump()

    assert profile["prediction"]["kind"] == "numeric"
    assert profile["prediction"]["max"] == 1.0


@pytest.mark.parametrize(
    ("series", "kind"),
    [
        (pd.Series([1, 2, 3]), "numeric"),
        (pd.Series([1.5, None]), "numeric"),
        (pd.Series([1, None], dtype="Int64"), "numeric"),
        (pd.Series(["a", "b"]), "categorical"),
        (pd.Series(["a", "b"], dtype="category"), "categorical"),
        (pd.Series([True, False]), "categorical"),
        (pd.Series([True, None], dtype="object"), "categorical"),
    ],
)
def test_feature_kind(series, kind):
    assert feature_kind(series) == kind


def test_histogram_fractions_clip_values_outside_the_edges_into_end_bins():
    fractions = histogram_fractions([-100.0, 0.5, 1.5, 100.0, math.nan], [0.0, 1.0, 2.0])

    assert fractions == [0.5, 0.5]


def test_missing_feature_column_is_an_error():
    with pytest.raises(ValueError, match="income"):
        build_reference_profile(training_frame(), ["age", "income"])


def test_a_profile_stored_before_the_evaluation_set_existed_still_loads():
    stored = build_reference_profile(training_frame(), ["age", "plan"]).model_dump(mode="json")
    del stored["evaluation"]

    profile = ReferenceProfile.from_json(json.dumps(stored))

    assert profile.evaluation is None and set(profile.features) == {"age", "plan"}


def test_the_evaluation_set_keeps_probabilities_and_labels_row_aligned_and_capped():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 8000)
    probabilities = np.column_stack([1 - labels * 0.9, labels * 0.9])  # row i says the truth of row i

    kept = evaluation_set(np.array([0, 1]), labels, probabilities, max_rows=3000, seed=1)

    assert kept.classes == ["0", "1"]
    assert len(kept.labels) == len(kept.probabilities) == 3000
    assert all((p[1] == 0.9) == (y == "1") for p, y in zip(kept.probabilities, kept.labels, strict=True))


def test_evaluation_set_rejects_probabilities_that_do_not_match_the_classes():
    with pytest.raises(ValueError, match="3 classes"):
        evaluation_set(["a", "b", "c"], ["a"], [[0.5, 0.5]])


@pytest.mark.parametrize(("value", "key"), [(1, "1"), (1.0, "1"), (np.int64(2), "2"), ("1", "1"), (True, "True")])
def test_class_keys_agree_across_label_types(value, key):
    assert class_key(value) == key
