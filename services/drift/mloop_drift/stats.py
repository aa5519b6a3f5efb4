"""Univariate drift tests.

Each method is fitted once from one entry of a reference profile (the trainer's typed
summary of a training column, ``mloop_common.profile``) and then scores any number of
windows, returning a `TestResult`. Methods hold no state that changes between calls.
Missing values (None, NaN, empty string) and, for numeric columns, values that are not
finite numbers are excluded from the distributions: the detector reports them as data
quality signals instead. A window left empty by that exclusion scores as "not drifted"
with no statistic.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cached_property
from numbers import Integral, Real
from types import MappingProxyType
from typing import Any, ClassVar, Protocol

import numpy as np
from numpy.typing import NDArray
from scipy import stats as sps
from scipy.spatial.distance import jensenshannon

from mloop_common.profile import OTHER_CATEGORY, CategoricalProfile, FeatureKind, NumericProfile

ProfileEntry = NumericProfile | CategoricalProfile

# Below these window sizes a test's null distribution sits too close to its threshold
# (PSI on ~10 bins, Jensen-Shannon on many categories are biased upwards on small samples).
PSI_MIN_WINDOW = 200
WASSERSTEIN_MIN_WINDOW = 5000
JENSEN_SHANNON_MIN_WINDOW = 1000
# Up to this sample size KS uses scipy's exact p-value; above, its asymptotic one on pre-sorted arrays.
KS_EXACT_MAX = 10_000
JENSEN_SHANNON_MIN_PER_CATEGORY = 50


@dataclass(frozen=True)
class UpperBound:
    """Drifted when the statistic reaches `value`."""

    value: float

    def is_drifted(self, statistic: float, p_value: float | None) -> bool:
        """Whether a statistic (and its p-value, unused here) crosses the bound."""
        return statistic >= self.value

    @property
    def statistic_bound(self) -> float:
        """The value the statistic is compared with."""
        return self.value

    @property
    def alpha(self) -> float | None:
        """No significance level: the bound is on the statistic alone."""
        return None


@dataclass(frozen=True)
class Significance:
    """Drifted when p < alpha and the effect size reaches `min_effect`.

    The effect floor matters because on large windows a test finds any difference,
    however small, significant.
    """

    alpha: float = 0.05
    min_effect: float = 0.1

    def is_drifted(self, statistic: float, p_value: float | None) -> bool:
        """Whether the result is both significant and large enough to matter."""
        return p_value is not None and p_value < self.alpha and statistic >= self.min_effect

    @property
    def statistic_bound(self) -> float:
        """The value the effect size is compared with."""
        return self.min_effect


Threshold = UpperBound | Significance


@dataclass(frozen=True)
class TestResult:
    """One test on one column of one window.

    `statistic` is the value compared with `threshold`: the KS distance, the PSI, the
    normalised Wasserstein distance, the chi-square effect size w = sqrt(chi2 / n), or
    the Jensen-Shannon distance. `alpha` is set for significance tests.
    """

    __test__ = False  # not a pytest test class despite the name

    method: str
    statistic: float | None
    threshold: float
    drifted: bool
    p_value: float | None = None
    alpha: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types."""
        return {
            "method": self.method,
            "statistic": self.statistic,
            "threshold": self.threshold,
            "drifted": self.drifted,
            "p_value": self.p_value,
            "alpha": self.alpha,
        }


@dataclass(frozen=True)
class NumericValues:
    """A column split into usable values and the counts of what was left out."""

    values: NDArray[np.float64]
    missing: int
    invalid: int

    @property
    def total(self) -> int:
        """All entries, usable or not."""
        return int(self.values.size) + self.missing + self.invalid


def is_missing(value: Any) -> bool:
    """None, NaN and the empty string count as missing."""
    if value is None:
        return True
    if isinstance(value, float | np.floating):
        return math.isnan(value)
    return isinstance(value, str) and value.strip() == ""


def present_mask(values: NDArray[np.object_]) -> NDArray[np.bool_]:
    """True where a value is not missing (see `is_missing`)."""
    return np.fromiter((not is_missing(v) for v in values.tolist()), dtype=bool, count=values.size)


def parse_numeric(values: Iterable[Any]) -> NumericValues:
    """Split raw values into finite floats, missing entries and invalid (non-numeric or infinite) entries."""
    if isinstance(values, np.ndarray) and values.dtype.kind in "fiub":
        arr = values.astype(np.float64, copy=False).ravel()
        nan = np.isnan(arr)
        finite = np.isfinite(arr)
        return NumericValues(arr[finite], int(nan.sum()), int((~finite & ~nan).sum()))
    out: list[float] = []
    missing = invalid = 0
    for value in values:
        if is_missing(value):
            missing += 1
            continue
        number = _to_float(value)
        if number is None or not math.isfinite(number):
            invalid += 1
        else:
            out.append(number)
    return NumericValues(np.asarray(out, dtype=np.float64), missing, invalid)


def _to_float(value: Any) -> float | None:
    if isinstance(value, bool | np.bool_):
        return float(value)
    if isinstance(value, Real):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            return None
    return None


def category_key(value: Any) -> str | None:
    """The string a value is compared under with profile categories; None when missing."""
    if is_missing(value):
        return None
    if isinstance(value, bool | np.bool_):
        return str(bool(value))
    if isinstance(value, Integral):
        return str(int(value))
    if isinstance(value, Real) and float(value).is_integer():
        return str(int(float(value)))
    if isinstance(value, np.generic):
        return str(value.item())
    return str(value)


@dataclass(frozen=True, eq=False)
class CategoryCounts:
    """A window's categorical values counted against a reference table."""

    per_category: NDArray[np.int64]
    unseen: int
    missing: int
    unlisted: int  # present values not naming a listed category, whether folded into "__other__" or not

    @property
    def present(self) -> int:
        """Values that are not missing."""
        return int(self.per_category.sum()) + self.unseen


class CategoryIndex:
    """Maps window values onto the cells of a reference frequency table."""

    def __init__(self, frequencies: Mapping[str, float]) -> None:
        cleaned = {str(k): float(v) for k, v in frequencies.items() if float(v) > 0}
        total = sum(cleaned.values())
        self.categories: tuple[str, ...] = tuple(cleaned)
        shares = np.array([cleaned[c] / total for c in self.categories]) if total > 0 else np.zeros(0)
        shares.setflags(write=False)
        self.shares: NDArray[np.float64] = shares
        self.other: int | None = self.categories.index(OTHER_CATEGORY) if OTHER_CATEGORY in cleaned else None
        lookup: dict[str, int] = {}
        for i, category in enumerate(self.categories):
            lookup[category] = i
            # Profiles built from a float column with NaNs name categories "1.0" for integer 1.
            if category.endswith(".0") and _is_int_literal(category[:-2]):
                lookup.setdefault(category[:-2], i)
        self._lookup = MappingProxyType(lookup)

    @property
    def other_share(self) -> float:
        """Reference share of categories the profile folded into "__other__"."""
        return float(self.shares[self.other]) if self.other is not None else 0.0

    def count(self, values: Iterable[Any]) -> CategoryCounts:
        """Count a window's raw values per reference cell (see `count_keys`)."""
        keys = np.array([category_key(v) for v in values], dtype=object)
        return self.count_keys(keys)

    def count_keys(self, keys: NDArray[np.object_]) -> CategoryCounts:
        """Count a window's category keys (None: missing) per reference cell.

        Values the profile does not list go to "__other__" when it exists (they may be
        rare training categories) and are counted as unseen otherwise.
        """
        counts = np.zeros(len(self.categories), dtype=np.int64)
        present = keys[present_mask(keys)]
        missing = int(keys.size - present.size)
        unseen = unlisted = 0
        if present.size:
            uniques, tallies = np.unique(present.astype(str), return_counts=True)
            for key, tally in zip(uniques.tolist(), tallies.tolist(), strict=True):
                index = self._lookup.get(key)
                if index is None or index == self.other:
                    unlisted += tally
                if index is None and key != OTHER_CATEGORY:
                    index = self.other
                if index is None:
                    unseen += tally
                else:
                    counts[index] += tally
        return CategoryCounts(counts, unseen, missing, unlisted)


def _is_int_literal(text: str) -> bool:
    digits = text[1:] if text.startswith("-") else text
    return digits.isdigit()


class DriftMethod(Protocol):
    """A drift test fitted on one reference profile entry."""

    name: ClassVar[str]
    kind: ClassVar[FeatureKind]
    default_threshold: ClassVar[Threshold]

    @property
    def threshold(self) -> Threshold:
        """The bound the statistic is judged against."""
        ...

    @classmethod
    def fit(cls, entry: ProfileEntry, threshold: Threshold | None = None) -> DriftMethod:
        """Build the method from a profile entry."""
        ...

    def score(self, values: Iterable[Any]) -> TestResult:
        """Test one window of raw column values against the reference."""
        ...


def _no_result(name: str, threshold: Threshold) -> TestResult:
    return TestResult(name, None, threshold.statistic_bound, False, None, threshold.alpha)


def _result(name: str, threshold: Threshold, statistic: float, p_value: float | None = None) -> TestResult:
    return TestResult(
        method=name,
        statistic=float(statistic),
        threshold=threshold.statistic_bound,
        drifted=bool(threshold.is_drifted(statistic, p_value)),
        p_value=None if p_value is None else float(p_value),
        alpha=threshold.alpha,
    )


def _reference_sample(entry: NumericProfile) -> NDArray[np.float64]:
    # The profile holds floats already: one vectorised conversion, not a parse per value.
    # Sorted once here: the tests that use it work on sorted arrays.
    sample = np.sort(parse_numeric(np.asarray(entry.sample, dtype=np.float64)).values)
    sample.setflags(write=False)
    return sample


def _numeric(entry: ProfileEntry, method: str) -> NumericProfile:
    if not isinstance(entry, NumericProfile):
        raise ValueError(f"{method} needs a numeric profile entry, got kind={entry.kind!r}")
    return entry


def _categorical(entry: ProfileEntry, method: str) -> CategoricalProfile:
    if not isinstance(entry, CategoricalProfile):
        raise ValueError(f"{method} needs a categorical profile entry, got kind={entry.kind!r}")
    return entry


@dataclass(frozen=True, eq=False)
class KolmogorovSmirnov:
    """Two-sample Kolmogorov-Smirnov test of the window against the reference sample."""

    name: ClassVar[str] = "ks"
    kind: ClassVar[FeatureKind] = "numeric"
    default_threshold: ClassVar[Threshold] = Significance(alpha=0.05, min_effect=0.1)

    sample: NDArray[np.float64]
    threshold: Threshold = default_threshold

    @classmethod
    def fit(cls, entry: ProfileEntry, threshold: Threshold | None = None) -> KolmogorovSmirnov:
        """Keep the reference sample."""
        return cls(_reference_sample(_numeric(entry, cls.name)), threshold or cls.default_threshold)

    def score(self, values: Iterable[Any]) -> TestResult:
        """KS distance and p-value."""
        return self.score_sorted(np.sort(parse_numeric(values).values))

    def score_sorted(self, window: NDArray[np.float64]) -> TestResult:
        """The test on a window's finite values, sorted."""
        if window.size == 0 or self.sample.size == 0:
            return _no_result(self.name, self.threshold)
        if max(window.size, self.sample.size) <= KS_EXACT_MAX:
            outcome = sps.ks_2samp(self.sample, window)
            return _result(self.name, self.threshold, outcome.statistic, outcome.pvalue)
        # Large windows: scipy's asymptotic two-sided test, on arrays already sorted (no re-sorting).
        reference = self.sample
        points = np.concatenate([reference, window])
        gap = np.abs(
            np.searchsorted(reference, points, side="right") / reference.size
            - np.searchsorted(window, points, side="right") / window.size
        )
        statistic = float(gap.max())
        effective = round(reference.size * window.size / (reference.size + window.size))
        return _result(self.name, self.threshold, statistic, float(sps.kstwo.sf(statistic, effective)))


@dataclass(frozen=True, eq=False)
class PopulationStabilityIndex:
    """PSI over the reference decile bins; values beyond the outer edges fall in the end bins."""

    name: ClassVar[str] = "psi"
    kind: ClassVar[FeatureKind] = "numeric"
    default_threshold: ClassVar[Threshold] = UpperBound(0.2)
    epsilon: ClassVar[float] = 1e-4

    inner_edges: NDArray[np.float64]
    expected: NDArray[np.float64]
    threshold: Threshold = default_threshold

    @classmethod
    def fit(cls, entry: ProfileEntry, threshold: Threshold | None = None) -> PopulationStabilityIndex:
        """Keep the inner bin edges and the smoothed reference bin shares."""
        numeric = _numeric(entry, cls.name)
        edges = np.asarray(numeric.bin_edges, dtype=np.float64)
        fractions = np.asarray(numeric.bin_fractions, dtype=np.float64)
        if edges.size < 2:
            # A constant training column has a single bin: every window value lands in it.
            edges, fractions = np.zeros(2), np.ones(1)
        if fractions.size != edges.size - 1:
            raise ValueError(f"psi: bin_fractions has {fractions.size} values for {edges.size - 1} bins")
        inner = edges[1:-1].copy()
        inner.setflags(write=False)
        expected = cls._smooth(fractions)
        expected.setflags(write=False)
        return cls(inner, expected, threshold or cls.default_threshold)

    @classmethod
    def _smooth(cls, shares: NDArray[np.float64]) -> NDArray[np.float64]:
        # Empty bins would make the log ratio infinite.
        smoothed = np.clip(shares, 0.0, None) + cls.epsilon
        return smoothed / smoothed.sum()

    def score(self, values: Iterable[Any]) -> TestResult:
        """Population stability index of the window's bin shares against the reference's."""
        return self.score_sorted(np.sort(parse_numeric(values).values))

    def score_sorted(self, window: NDArray[np.float64]) -> TestResult:
        """The test on a window's finite values, sorted: the bin counts are where the edges fall in them."""
        if window.size == 0:
            return _no_result(self.name, self.threshold)
        cuts = np.searchsorted(window, self.inner_edges, side="left")
        counts = np.diff(np.concatenate([[0], cuts, [window.size]]))
        actual = self._smooth(counts / window.size)
        psi = float(np.sum((actual - self.expected) * np.log(actual / self.expected)))
        return _result(self.name, self.threshold, psi)


@dataclass(frozen=True, eq=False)
class Wasserstein:
    """Earth mover's distance between the reference sample and the window, in reference standard deviations."""

    name: ClassVar[str] = "wasserstein"
    kind: ClassVar[FeatureKind] = "numeric"
    default_threshold: ClassVar[Threshold] = UpperBound(0.1)

    sample: NDArray[np.float64]
    scale: float
    threshold: Threshold = default_threshold

    @classmethod
    def fit(cls, entry: ProfileEntry, threshold: Threshold | None = None) -> Wasserstein:
        """Keep the reference sample and the scale that normalises distances."""
        numeric = _numeric(entry, cls.name)
        sample = _reference_sample(numeric)
        std = _finite_or_none(numeric.std)
        if std is None or std <= 0:
            std = float(np.std(sample)) if sample.size else 0.0
        if std <= 0:
            # A constant training column has no spread: measure in units of its magnitude.
            mean = _finite_or_none(numeric.mean) or 0.0
            std = abs(mean) if mean != 0 else 1.0
        return cls(sample, std, threshold or cls.default_threshold)

    @cached_property
    def _steps(self) -> ReferenceSteps:
        return ReferenceSteps.of(self.sample)

    def score(self, values: Iterable[Any]) -> TestResult:
        """Normalised Wasserstein-1 distance."""
        return self.score_sorted(np.sort(parse_numeric(values).values))

    def score_sorted(self, window: NDArray[np.float64]) -> TestResult:
        """The test on a window's finite values, sorted."""
        if window.size == 0 or self.sample.size == 0:
            return _no_result(self.name, self.threshold)
        return _result(self.name, self.threshold, self._steps.wasserstein(window) / self.scale)


@dataclass(frozen=True)
class ReferenceSteps:
    """A sorted sample's quantile function as steps: its distinct values and how many sample values are at
    most each one (``cumulative[-1]`` is the sample's size)."""

    values: NDArray[np.float64]
    cumulative: NDArray[np.int64]

    @classmethod
    def of(cls, ordered: NDArray[np.float64]) -> ReferenceSteps:
        first = _first_of_runs(ordered)
        return cls(ordered[first], np.append(np.flatnonzero(first)[1:], ordered.size).astype(np.int64))

    def wasserstein(self, window: NDArray[np.float64]) -> float:
        """W1 = integral over u in (0, 1) of |Q_ref(u) - Q_win(u)| against a sorted window, in O(m + r).

        The window's quantile function is w_j on [j/m, (j+1)/m); the reference's steps from one value to
        the next at u = cumulative[i] / n. Each window slot is first paired with the reference value where
        the slot starts (one vectorised pass, no prefix sums or merged sort); a slot that a reference step
        falls inside is then corrected for the part of it after the step. Step positions are compared as
        integers (cumulative * m against slot * n), so ties and exact boundaries are exact.
        """
        values, cumulative = self.values, self.cumulative
        n, m = int(cumulative[-1]), window.size
        inner = cumulative[:-1]
        # The first slot that lies wholly after each inner step: ceil(inner * m / n).
        after_step = -(-(inner * m) // n)
        paired = np.repeat(values, np.diff(np.concatenate([[0], after_step, [m]])))
        # In place: on a large window each new array costs page faults, not just arithmetic.
        np.subtract(window, paired, out=paired)
        distance = float(np.abs(paired, out=paired).sum())
        if inner.size:
            # A step inside slot s (s < inner * m / n < s + 1) changes the value for the rest of that slot.
            rest = (after_step * n - inner * m) / n
            straddled = window[np.clip(after_step - 1, 0, m - 1)]
            distance += float(np.sum(rest * (np.abs(straddled - values[1:]) - np.abs(straddled - values[:-1]))))
        return distance / m


def wasserstein_sorted(reference: NDArray[np.float64], window: NDArray[np.float64]) -> float:
    """W1 between two sorted samples (see ReferenceSteps.wasserstein)."""
    return ReferenceSteps.of(reference).wasserstein(window)


def _first_of_runs(ordered: NDArray[Any]) -> NDArray[np.bool_]:
    """Where each run of equal values in a sorted array starts (np.unique without its hashing or re-sorting)."""
    return np.concatenate([[True], ordered[1:] != ordered[:-1]]) if ordered.size else np.zeros(0, dtype=bool)


def _finite_or_none(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


@dataclass(frozen=True, eq=False)
class ChiSquare:
    """Chi-square goodness of fit of window counts against the reference frequencies.

    Values the reference never saw go to one extra cell whose expected share is
    `unseen_share`; the cell exists only when the window has such values, so a window
    drawn from the reference is tested on exactly the reference categories.
    """

    name: ClassVar[str] = "chi2"
    kind: ClassVar[FeatureKind] = "categorical"
    default_threshold: ClassVar[Threshold] = Significance(alpha=0.05, min_effect=0.1)
    unseen_share: ClassVar[float] = 0.005

    index: CategoryIndex
    threshold: Threshold = default_threshold

    @classmethod
    def fit(cls, entry: ProfileEntry, threshold: Threshold | None = None) -> ChiSquare:
        """Index the reference categories."""
        return cls(CategoryIndex(_categorical(entry, cls.name).frequencies), threshold or cls.default_threshold)

    def score(self, values: Iterable[Any]) -> TestResult:
        """Effect size w = sqrt(chi2 / n) (Cramér's V for two categories) and the chi-square p-value."""
        return self.score_tally(self.index.count(values))

    def score_tally(self, tally: CategoryCounts) -> TestResult:
        """The test on a window already counted against this method's reference categories."""
        n = tally.present
        if n == 0 or self.index.shares.size == 0:
            return _no_result(self.name, self.threshold)
        observed = tally.per_category.astype(np.float64)
        shares = self.index.shares
        if tally.unseen:
            observed = np.append(observed, tally.unseen)
            shares = np.append(shares * (1 - self.unseen_share), self.unseen_share)
        expected = shares * n
        chi2 = float(np.sum((observed - expected) ** 2 / expected))
        dof = observed.size - 1
        p_value = float(sps.chi2.sf(chi2, dof)) if dof > 0 else 1.0
        return _result(self.name, self.threshold, math.sqrt(chi2 / n), p_value)


@dataclass(frozen=True, eq=False)
class JensenShannon:
    """Jensen-Shannon distance (base 2, in [0, 1]) between reference and window category shares."""

    name: ClassVar[str] = "jensen_shannon"
    kind: ClassVar[FeatureKind] = "categorical"
    default_threshold: ClassVar[Threshold] = UpperBound(0.1)

    index: CategoryIndex
    threshold: Threshold = default_threshold

    @classmethod
    def fit(cls, entry: ProfileEntry, threshold: Threshold | None = None) -> JensenShannon:
        """Index the reference categories."""
        return cls(CategoryIndex(_categorical(entry, cls.name).frequencies), threshold or cls.default_threshold)

    def score(self, values: Iterable[Any]) -> TestResult:
        """Jensen-Shannon distance; unseen values form a cell the reference gives no mass."""
        return self.score_tally(self.index.count(values))

    def score_tally(self, tally: CategoryCounts) -> TestResult:
        """The test on a window already counted against this method's reference categories."""
        n = tally.present
        if n == 0 or self.index.shares.size == 0:
            return _no_result(self.name, self.threshold)
        reference = np.append(self.index.shares, 0.0)
        window = np.append(tally.per_category, tally.unseen) / n
        distance = float(jensenshannon(reference, window, base=2))
        return _result(self.name, self.threshold, distance)


METHODS: Mapping[str, type[DriftMethod]] = MappingProxyType(
    {
        KolmogorovSmirnov.name: KolmogorovSmirnov,
        PopulationStabilityIndex.name: PopulationStabilityIndex,
        Wasserstein.name: Wasserstein,
        ChiSquare.name: ChiSquare,
        JensenShannon.name: JensenShannon,
    }
)


def fit_method(name: str, entry: ProfileEntry, threshold: Threshold | None = None) -> DriftMethod:
    """Fit a registered method by name on a profile entry."""
    try:
        method = METHODS[name]
    except KeyError:
        raise ValueError(f"unknown drift method {name!r}; known: {sorted(METHODS)}") from None
    return method.fit(entry, threshold)


def default_methods(kind: FeatureKind, n: int, *, categories: int = 0) -> tuple[str, ...]:
    """Default tests for a column type, window size n and (categorical) number of reference categories."""
    if kind == "numeric":
        if n >= WASSERSTEIN_MIN_WINDOW:
            # On large windows KS finds every difference significant; the distance in reference
            # standard deviations says whether it matters.
            return ("wasserstein", "psi")
        return ("ks", "psi") if n >= PSI_MIN_WINDOW else ("ks",)
    if kind == "categorical":
        # Jensen-Shannon is a second opinion for large windows; on small ones its upward bias
        # would flag noise, and chi-square alone is the better test there.
        large = n >= max(JENSEN_SHANNON_MIN_WINDOW, JENSEN_SHANNON_MIN_PER_CATEGORY * categories)
        return ("chi2", "jensen_shannon") if large else ("chi2",)
    raise ValueError(f"unknown column kind {kind!r}")
