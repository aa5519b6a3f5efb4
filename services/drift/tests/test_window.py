import math

import numpy as np
import pytest

from mloop_drift.window import Window, categorical_column, numeric_column, place_by_count, probability_matrix


def test_a_clean_numeric_column_keeps_its_finite_values_and_counts_the_gaps() -> None:
    column = numeric_column([1.0, None, 3, math.nan, 5.5])

    assert column.values.tolist() == [1.0, 3.0, 5.5]
    assert (column.total, column.missing, column.wrong_type, column.absent) == (5, 2, 0, 0)


def test_text_booleans_and_infinities_in_a_numeric_column_are_the_wrong_type() -> None:
    column = numeric_column([1.0, "2.5", "two", True, [3], None, math.inf])

    assert column.values.tolist() == [1.0, 2.5, 1.0]  # number-like text and booleans still measure
    assert (column.missing, column.wrong_type) == (1, 5)


def test_category_keys_agree_across_types_and_missing_values_are_none() -> None:
    column = categorical_column([1, "1", 1.0, True, "", None, math.nan, "pro", [1, 2]])

    assert column.keys.tolist() == ["1", "1", "1", "True", None, None, None, "pro", "[1, 2]"]
    assert column.missing == 3


def test_rows_become_columns_and_absent_keys_are_told_from_nulls() -> None:
    rows = [{"age": 30.0, "plan": "pro"}, {"age": None, "plan": "basic"}, {"plan": "pro"}]

    window = Window.from_rows({"age": "numeric", "plan": "categorical"}, rows, ["a", "b", "a"], labels=[None, "b", "a"])

    age = window.features["age"]
    assert age.missing == 2 and age.absent == 1
    assert window.features["plan"].absent == 0
    assert window.labels is not None and window.labels.tolist() == [None, "b", "a"]


def test_malformed_probability_vectors_become_nan_rows() -> None:
    matrix = probability_matrix([[0.2, 0.8], None, [0.5], [0.1, "x"], [1.5, -0.5], [0.3, 0.7]])

    assert matrix.shape == (6, 2)
    assert np.isnan(matrix[1:5]).all() and matrix[5].tolist() == [0.3, 0.7]


def test_numeric_vectors_out_of_range_or_not_finite_become_nan_rows_and_the_rest_stay() -> None:
    matrix = probability_matrix([[0.2, 0.8], [1.5, -0.5], [float("nan"), 1.0], (0.3, 0.7), np.array([0.6, 0.4])])

    assert np.isnan(matrix[1:3]).all()
    assert matrix[[0, 3, 4]].tolist() == [[0.2, 0.8], [0.3, 0.7], [0.6, 0.4]]


def test_columns_must_match_the_rows() -> None:
    with pytest.raises(ValueError, match="labels has 1 entries for 2 rows"):
        Window.from_rows({"x": "numeric"}, [{"x": 1}, {"x": 2}], [0, 1], labels=[0])


def test_numpy_numbers_are_counted_as_the_same_values_in_a_list_would_be() -> None:
    floats = np.array([1.5, np.nan, np.inf, -2.0])
    from_array, from_list = numeric_column(floats), numeric_column([1.5, None, float("inf"), -2.0])

    assert from_array.values.tolist() == from_list.values.tolist() == [1.5, -2.0]
    assert (from_array.total, from_array.missing, from_array.wrong_type) == (4, 1, 1)
    assert (from_list.total, from_list.missing, from_list.wrong_type) == (4, 1, 1)
    assert numeric_column(np.array([3, 4], dtype=np.int32)).values.tolist() == [3.0, 4.0]
    assert numeric_column(np.array([True, False])).wrong_type == 2  # booleans are not numbers here


def test_arrivals_fill_the_open_count_window_first_and_complete_windows_in_order() -> None:
    placement = place_by_count(next_window=3, filled=7, size=10, arriving=25)
    assert placement.indexes == [3] * 3 + [4] * 10 + [5] * 10 + [6] * 2
    assert placement.complete == [3, 4, 5]
    assert (placement.next_window, placement.filled) == (6, 2)


def test_arrivals_that_exactly_fill_a_window_leave_the_next_one_empty() -> None:
    placement = place_by_count(next_window=1, filled=0, size=5, arriving=5)
    assert (placement.complete, placement.next_window, placement.filled) == ([1], 2, 0)
    assert place_by_count(next_window=2, filled=4, size=5, arriving=0).indexes == []


def test_a_count_window_already_over_its_size_is_refused() -> None:
    with pytest.raises(ValueError, match="cannot already hold 5"):
        place_by_count(next_window=1, filled=5, size=5, arriving=1)
