import dataclasses
import math
from typing import Any

import numpy as np
import pytest
from scipy import stats as sps

from mloop_common.profile import CategoricalProfile, NumericProfile
from mloop_drift.stats import (
    METHODS,
    ChiSquare,
    JensenShannon,
    KolmogorovSmirnov,
    PopulationStabilityIndex,
    Significance,
    UpperBound,
    Wasserstein,
    category_key,
    default_methods,
    fit_method,
    parse_numeric,
    wasserstein_sorted,
)

from .profiles import categorical_entry, numeric, numeric_entry

REFERENCE_SHARES = {"basic": 0.5, "pro": 0.3, "team": 0.15, "enterprise": 0.05}


def normal_entry(seed: int = 1) -> NumericProfile:
    return numeric_entry(np.random.default_rng(seed).normal(50.0, 10.0, 20_000))


def draw_categories(shares: dict[str, float], n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return [str(c) for c in rng.choice(list(shares), size=n, p=list(shares.values()))]


def entry_for(name: str) -> NumericProfile | CategoricalProfile:
    return normal_entry() if METHODS[name].kind == "numeric" else categorical_entry(REFERENCE_SHARES)


@pytest.mark.parametrize("name", sorted(METHODS))
@pytest.mark.parametrize("window", [[], [None, math.nan], [None, "", float("nan")], np.array([np.nan, np.nan])])
def test_empty_or_all_missing_window_scores_no_drift_and_no_statistic(name: str, window: Any) -> None:
    result = fit_method(name, entry_for(name)).score(window)

    assert result.method == name
    assert result.statistic is None
    assert result.p_value is None
    assert result.drifted is False


@pytest.mark.parametrize("name", sorted(METHODS))
def test_missing_values_are_excluded_not_scored(name: str) -> None:
    entry = entry_for(name)
    if METHODS[name].kind == "numeric":
        clean: list[Any] = np.random.default_rng(7).normal(50.0, 10.0, 500).tolist()
    else:
        clean = draw_categories(REFERENCE_SHARES, 500, seed=7)
    method = fit_method(name, entry)

    assert method.score(clean + [None] * 300 + [math.nan] * 200) == method.score(clean)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_window_from_the_reference_distribution_does_not_drift(name: str) -> None:
    entry = entry_for(name)
    if METHODS[name].kind == "numeric":
        window: list[Any] = np.random.default_rng(42).normal(50.0, 10.0, 1000).tolist()
    else:
        window = draw_categories(REFERENCE_SHARES, 1000, seed=42)

    result = fit_method(name, entry).score(window)

    assert result.statistic is not None
    assert result.drifted is False


@pytest.mark.parametrize("name", ["ks", "psi", "wasserstein"])
def test_mean_shift_of_one_standard_deviation_drifts(name: str) -> None:
    window = np.random.default_rng(42).normal(60.0, 10.0, 1000).tolist()

    result = fit_method(name, normal_entry()).score(window)

    assert result.drifted is True


@pytest.mark.parametrize("name", ["chi2", "jensen_shannon"])
def test_swapping_category_shares_drifts(name: str) -> None:
    swapped = {"basic": 0.3, "pro": 0.5, "team": 0.15, "enterprise": 0.05}
    window = draw_categories(swapped, 1000, seed=42)

    result = fit_method(name, categorical_entry(REFERENCE_SHARES)).score(window)

    assert result.drifted is True


def test_ks_statistic_is_the_largest_gap_between_the_two_cdfs() -> None:
    entry = numeric_entry(np.arange(100, dtype=float))

    result = KolmogorovSmirnov.fit(entry).score(np.arange(50, 150, dtype=float))

    assert result.statistic == pytest.approx(0.5)
    assert result.p_value is not None and result.p_value < 1e-6
    assert result.threshold == 0.1 and result.alpha == 0.05
    assert result.drifted is True


def test_ks_ignores_a_significant_but_tiny_shift_on_a_large_window() -> None:
    window = np.random.default_rng(3).normal(51.5, 10.0, 100_000)

    result = KolmogorovSmirnov.fit(normal_entry()).score(window)

    assert result.p_value is not None and result.p_value < 0.05
    assert result.statistic is not None and result.statistic < 0.1
    assert result.drifted is False


def test_psi_matches_the_hand_computed_value() -> None:
    entry = numeric(bin_edges=[0.0, 1.0, 2.0, 3.0, 4.0], bin_fractions=[0.25] * 4)
    window = [0.5] * 10 + [1.5] * 20 + [2.5] * 30 + [3.5] * 40
    expected = sum((a - 0.25) * math.log(a / 0.25) for a in (0.1, 0.2, 0.3, 0.4))

    result = PopulationStabilityIndex.fit(entry).score(window)

    assert result.statistic == pytest.approx(expected, abs=1e-3)
    assert expected == pytest.approx(0.228, abs=1e-3)
    assert result.drifted is True


def test_psi_counts_values_beyond_the_outer_edges_in_the_end_bins() -> None:
    entry = numeric(bin_edges=[0.0, 1.0, 2.0], bin_fractions=[0.5, 0.5])

    result = PopulationStabilityIndex.fit(entry).score([-1e9, 0.5, 1.5, 1e9])

    assert result.statistic == pytest.approx(0.0, abs=1e-9)
    assert result.drifted is False


def test_psi_stays_finite_when_the_window_leaves_bins_empty() -> None:
    result = PopulationStabilityIndex.fit(normal_entry()).score([50.0] * 100)

    assert result.statistic is not None and math.isfinite(result.statistic)
    assert result.drifted is True


def test_psi_rejects_a_profile_whose_fractions_do_not_match_its_bins() -> None:
    with pytest.raises(ValueError, match="bin_fractions"):
        PopulationStabilityIndex.fit(numeric(bin_edges=[0.0, 1.0, 2.0], bin_fractions=[1.0]))


def test_wasserstein_is_the_shift_in_reference_standard_deviations() -> None:
    sample = np.arange(1000, dtype=float)
    entry = numeric_entry(sample).model_copy(update={"std": 250.0})

    result = Wasserstein.fit(entry).score(sample + 50.0)

    assert result.statistic == pytest.approx(0.2)
    assert result.drifted is True


def test_wasserstein_on_a_constant_reference_does_not_divide_by_zero() -> None:
    entry = numeric(mean=0.0, std=0.0, sample=[0.0] * 10)

    same = Wasserstein.fit(entry).score([0.0, 0.0])
    moved = Wasserstein.fit(entry).score([3.0, 3.0])

    assert same.statistic == 0.0 and same.drifted is False
    assert moved.statistic == pytest.approx(3.0) and moved.drifted is True


def test_chi2_matches_the_hand_computed_value() -> None:
    # 60/40 against 50/50 on 100 values: chi2 = 2 * 10**2 / 50 = 4, one degree of freedom.
    result = ChiSquare.fit(categorical_entry({"a": 0.5, "b": 0.5})).score(["a"] * 60 + ["b"] * 40)

    assert result.statistic == pytest.approx(math.sqrt(4 / 100))
    assert result.p_value == pytest.approx(0.0455, abs=1e-4)
    assert result.drifted is True


def test_chi2_ignores_a_significant_but_tiny_shift_on_a_large_window() -> None:
    result = ChiSquare.fit(categorical_entry({"a": 0.5, "b": 0.5})).score(["a"] * 50_500 + ["b"] * 49_500)

    assert result.p_value is not None and result.p_value < 0.05
    assert result.statistic == pytest.approx(0.01, abs=1e-4)
    assert result.drifted is False


def test_chi2_counts_unseen_categories_into_an_extra_cell() -> None:
    window = draw_categories(REFERENCE_SHARES, 900, seed=5) + ["brand-new"] * 100

    result = ChiSquare.fit(categorical_entry(REFERENCE_SHARES)).score(window)

    assert result.drifted is True


def test_chi2_folds_unlisted_categories_into_the_reference_other_share() -> None:
    entry = categorical_entry({"a": 0.45, "b": 0.45, "__other__": 0.1})
    window = ["a"] * 450 + ["b"] * 450 + ["rare-1"] * 60 + ["rare-2"] * 40

    result = ChiSquare.fit(entry).score(window)

    assert result.statistic == pytest.approx(0.0, abs=1e-9)
    assert result.drifted is False


def test_jensen_shannon_matches_the_hand_computed_value() -> None:
    # JS divergence of (1/2, 1/2) and (1, 0) in bits: 0.5 * KL(p||m) + 0.5 * KL(q||m), m = (3/4, 1/4).
    kl_p = 0.5 * math.log2(0.5 / 0.75) + 0.5 * math.log2(0.5 / 0.25)
    kl_q = math.log2(1 / 0.75)
    expected = math.sqrt(0.5 * kl_p + 0.5 * kl_q)

    result = JensenShannon.fit(categorical_entry({"a": 0.5, "b": 0.5})).score(["a"] * 10)

    assert result.statistic == pytest.approx(expected, abs=1e-9)
    assert expected == pytest.approx(0.558, abs=1e-3)
    assert result.drifted is True


def test_jensen_shannon_is_one_when_every_value_is_unseen() -> None:
    result = JensenShannon.fit(categorical_entry({"a": 0.5, "b": 0.5})).score(["z"] * 10)

    assert result.statistic == pytest.approx(1.0)


def test_integer_window_values_match_categories_profiled_as_floats_or_strings() -> None:
    entry = categorical_entry({"1.0": 0.5, "0.0": 0.5})

    result = ChiSquare.fit(entry).score([1, 0, 1.0, np.int64(0)] * 25)

    assert result.statistic == pytest.approx(0.0)


def test_category_key_normalises_numbers_and_booleans() -> None:
    assert category_key(3) == "3"
    assert category_key(3.0) == "3"
    assert category_key(np.float64(2.5)) == "2.5"
    assert category_key(True) == "True"
    assert category_key("x") == "x"
    assert category_key(None) is None
    assert category_key(math.nan) is None
    assert category_key("") is None


def test_parse_numeric_separates_missing_from_invalid_values() -> None:
    parsed = parse_numeric([1, "2.5", None, math.nan, "", "abc", math.inf, {"x": 1}, True])

    assert parsed.values.tolist() == [1.0, 2.5, 1.0]
    assert parsed.missing == 3
    assert parsed.invalid == 3
    assert parsed.total == 9


@pytest.mark.parametrize("name", ["ks", "psi", "wasserstein"])
def test_numeric_methods_skip_non_numeric_values(name: str) -> None:
    method = fit_method(name, normal_entry())
    window = np.random.default_rng(9).normal(50.0, 10.0, 300).tolist()

    assert method.score(window + ["n/a", "oops"]) == method.score(window)


def test_a_custom_threshold_changes_the_verdict_not_the_statistic() -> None:
    window = np.random.default_rng(42).normal(52.0, 10.0, 1000)
    strict = PopulationStabilityIndex.fit(normal_entry(), UpperBound(0.01)).score(window)
    default = PopulationStabilityIndex.fit(normal_entry()).score(window)

    assert strict.statistic == default.statistic
    assert strict.threshold == 0.01 and strict.drifted is True
    assert default.threshold == 0.2 and default.drifted is False


def test_thresholds_are_immutable() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        Significance().alpha = 0.5  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        UpperBound(0.2).value = 1.0  # type: ignore[misc]


def test_scoring_twice_gives_the_same_result() -> None:
    method = fit_method("ks", normal_entry())
    first_window = np.random.default_rng(1).normal(60.0, 10.0, 500)
    second_window = np.random.default_rng(2).normal(50.0, 10.0, 500)

    first = method.score(first_window)
    method.score(second_window)

    assert method.score(first_window) == first


def test_result_to_dict_holds_plain_json_types() -> None:
    result = fit_method("chi2", categorical_entry({"a": 0.5, "b": 0.5})).score(["a"] * 60 + ["b"] * 40)

    as_dict = result.to_dict()

    assert set(as_dict) == {"method", "statistic", "threshold", "drifted", "p_value", "alpha"}
    assert all(type(v) in (str, float, bool) for v in as_dict.values())


def test_fitting_rejects_unknown_methods_and_the_wrong_column_kind() -> None:
    with pytest.raises(ValueError, match="unknown drift method"):
        fit_method("t-test", normal_entry())
    with pytest.raises(ValueError, match="categorical"):
        fit_method("chi2", normal_entry())


@pytest.mark.parametrize(
    ("kind", "n", "categories", "expected"),
    [
        ("numeric", 50, 0, ("ks",)),
        ("numeric", 1000, 0, ("ks", "psi")),
        ("numeric", 50_000, 0, ("wasserstein", "psi")),
        ("categorical", 500, 4, ("chi2",)),
        ("categorical", 1000, 4, ("chi2", "jensen_shannon")),
        ("categorical", 1000, 40, ("chi2",)),
        ("categorical", 2000, 40, ("chi2", "jensen_shannon")),
    ],
)
def test_default_methods_depend_on_column_kind_and_window_size(
    kind: str, n: int, categories: int, expected: tuple[str, ...]
) -> None:
    assert default_methods(kind, n, categories=categories) == expected  # type: ignore[arg-type]


def test_default_methods_are_registered_for_their_kind() -> None:
    for kind in ("numeric", "categorical"):
        for name in default_methods(kind, 10_000):  # type: ignore[arg-type]
            assert METHODS[name].kind == kind


def test_default_methods_reject_an_unknown_kind() -> None:
    with pytest.raises(ValueError, match="unknown column kind"):
        default_methods("text", 100)  # type: ignore[arg-type]


@pytest.mark.parametrize(("n", "m"), [(1000, 50_000), (5, 7), (100, 3)])
def test_wasserstein_on_sorted_samples_matches_scipy(n: int, m: int) -> None:
    rng = np.random.default_rng(n + m)
    reference = np.sort(np.round(rng.normal(0.0, 1.0, n), 1))  # rounded: ties in the reference too
    window = np.sort(rng.normal(0.3, 1.5, m))

    assert wasserstein_sorted(reference, window) == pytest.approx(sps.wasserstein_distance(reference, window))


@pytest.mark.parametrize("seed", range(40))
def test_wasserstein_matches_scipy_on_small_samples_full_of_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    reference = np.sort(rng.integers(0, 6, rng.integers(1, 30)).astype(float))
    window = np.sort(rng.integers(0, 6, rng.integers(1, 40)).astype(float) + seed % 3)

    assert wasserstein_sorted(reference, window) == pytest.approx(sps.wasserstein_distance(reference, window))


def test_ks_on_a_large_window_matches_scipys_asymptotic_test() -> None:
    entry = numeric_entry(np.random.default_rng(1).normal(0.0, 1.0, 5000))
    window = np.random.default_rng(2).normal(0.05, 1.0, 20_000)

    result = KolmogorovSmirnov.fit(entry).score(window)

    expected = sps.ks_2samp(np.asarray(entry.sample), window, method="asymp")
    assert result.statistic == pytest.approx(expected.statistic)
    assert result.p_value == pytest.approx(expected.pvalue)
