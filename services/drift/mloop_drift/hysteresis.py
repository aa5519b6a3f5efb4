"""Hysteresis for retrain alarms: a signal that raised one must clear before it can raise another.

A *signal* is the performance check or one feature's drift tests. Its *level* in a window is its
statistic relative to its alarm threshold, 1.0 being the threshold: for a feature the largest
statistic / threshold over its tests, for performance how far the judged metric fell from the
baseline as a share of the tolerance (0 at the baseline, 1 at the tolerated limit).

When a retrain alarm is raised, the signals it rests on are *latched* for the version. A latched
signal is released by a later window (a higher index) whose level is below ``clear_fraction`` of the
threshold; until then it cannot raise another retrain alarm. Performance latched on labels (basis
"actual") is released by labels only: an estimate, which cannot see concept drift, does not clear it.
A signal not measured in a window (no labels and no estimate, a feature never sent) clears nothing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mloop_common.spec import metric_higher_is_better
from mloop_drift.detector import ColumnReport, DriftReport
from mloop_drift.performance import Performance

PERFORMANCE = "performance"
FEATURE = "feature:"  # a feature's signal is "feature:<name>", so no feature name can pass for "performance"
ACTUAL = "actual"


@dataclass(frozen=True)
class Reading:
    """One signal in one window: its level (None: not measured) and, for performance, its basis."""

    level: float | None
    basis: str | None = None


@dataclass(frozen=True)
class Latch:
    """A signal that raised a retrain alarm at ``window`` (on ``basis``) and has not cleared since."""

    window: int
    basis: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types, for the service's database."""
        return {"window": self.window, "basis": self.basis}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Latch:
        window, basis = data.get("window"), data.get("basis")
        if isinstance(window, bool) or not isinstance(window, int):
            raise ValueError(f"a latch's window must be an integer, got {window!r}")
        if basis is not None and not isinstance(basis, str):
            raise ValueError(f"a latch's basis must be a string or null, got {basis!r}")
        return cls(window, basis)


@dataclass(frozen=True)
class Hysteresis:
    """Alarm at the threshold (level >= 1, decided by the detector), clear below ``clear_fraction`` of it."""

    clear_fraction: float = 0.8

    def __post_init__(self) -> None:
        if isinstance(self.clear_fraction, bool) or not 0 < self.clear_fraction <= 1:
            raise ValueError("clear_fraction must be in (0, 1]")

    def clears(self, latch: Latch, index: int, reading: Reading | None) -> bool:
        """Whether window ``index`` releases a latched signal."""
        if reading is None or reading.level is None or index <= latch.window:
            return False
        if latch.basis == ACTUAL and reading.basis != ACTUAL:
            return False
        return reading.level < self.clear_fraction

    def observe(self, latched: Mapping[str, Latch], index: int, readings: Mapping[str, Reading]) -> dict[str, Latch]:
        """The latches left after window ``index`` was judged with these readings."""
        return {name: latch for name, latch in latched.items() if not self.clears(latch, index, readings.get(name))}

    @staticmethod
    def latch(latched: Mapping[str, Latch], index: int, signals: Mapping[str, Reading]) -> dict[str, Latch]:
        """The latches after a retrain alarm at window ``index`` resting on ``signals``."""
        return {**latched, **{name: Latch(index, reading.basis) for name, reading in signals.items()}}


def feature_signal(name: str) -> str:
    return FEATURE + name


def readings(report: DriftReport) -> dict[str, Reading]:
    """Every signal's level in a judged window."""
    found = {feature_signal(name): Reading(column_level(column)) for name, column in report.features.items()}
    found[PERFORMANCE] = Reading(performance_level(report.performance), report.performance.basis)
    return found


def alarm_signals(report: DriftReport) -> dict[str, Reading]:
    """The signals a retrain alarm on this window rests on: performance when it dropped, and the drifted features."""
    found = readings(report)
    signals = {feature_signal(name): found[feature_signal(name)] for name in report.drifted_features}
    if report.performance.degraded:
        signals[PERFORMANCE] = found[PERFORMANCE]
    return signals


def retrain_armed(report: DriftReport, latched: Mapping[str, Latch]) -> bool:
    """Whether a retrain verdict may raise its alarm: the evidence that calls for it is not all latched.

    A performance drop needs the performance signal free; a covariate shift that retrains (by policy) needs
    as many free drifted features as make a shift.
    """
    if report.performance.degraded:
        return PERFORMANCE not in latched
    free = [name for name in report.drifted_features if feature_signal(name) not in latched]
    return len(free) >= report.min_drifted_features


def column_level(column: ColumnReport) -> float | None:
    """A feature's level: its largest statistic relative to the test's threshold (None: no statistic)."""
    levels = [
        t.statistic / t.threshold
        for t in column.tests
        if t.statistic is not None and math.isfinite(t.statistic) and t.threshold > 0
    ]
    return max(levels) if levels else None


def performance_level(performance: Performance) -> float | None:
    """How far the judged metric fell from the baseline, as a share of the tolerance (None: not judged)."""
    metric, value, limit = performance.metric, performance.value, performance.limit
    if performance.basis is None or metric is None or value is None or limit is None:
        return None
    reference = performance.baseline.get(metric)
    if reference is None or not math.isfinite(value):
        return None
    tolerance = reference - limit  # positive for scores, negative for errors: the ratio's sign works for both
    if tolerance == 0:
        worse = value < reference if metric_higher_is_better(metric) else value > reference
        return math.inf if worse else 0.0
    return (reference - value) / tolerance
