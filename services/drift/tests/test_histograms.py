"""Reference against current per feature for one window: the bins a person compares (pure, and the route)."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest

from mloop_common.profile import CategoricalProfile, ReferenceProfile
from mloop_drift.entities import MonitoredVersion, Prediction
from mloop_drift.histograms import categorical_histogram, numeric_histogram, window_histograms

from .profiles import numeric_entry
from .test_api import client_with, report

RNG = np.random.default_rng(7)
WINTER = RNG.normal(2.0, 3.0, 2000)


def test_a_window_like_the_reference_fills_each_decile_about_equally() -> None:
    histogram = numeric_histogram(numeric_entry(WINTER), list(RNG.normal(2.0, 3.0, 1000)))
    deciles = [i for i, label in enumerate(histogram.bins) if " to " in label]

    assert len(deciles) == 10 and histogram.current_values == 1000
    assert [histogram.reference[i] for i in deciles] == pytest.approx([0.1] * 10, abs=0.01)
    assert [histogram.current[i] for i in deciles] == pytest.approx([0.1] * 10, abs=0.04)
    assert sum(histogram.current) == pytest.approx(1.0)  # the few values past the training range included


def test_a_season_the_model_never_saw_lands_in_a_bin_above_the_reference_range() -> None:
    summer = list(RNG.normal(25.0, 3.0, 500))
    histogram = numeric_histogram(numeric_entry(WINTER), summer)

    assert histogram.bins[-1].startswith("above ")
    assert histogram.reference[-1] == 0.0
    assert histogram.current[-1] > 0.9
    assert sum(histogram.current) == pytest.approx(1.0)


def test_missing_and_non_numeric_values_are_counted_apart_from_the_fractions() -> None:
    histogram = numeric_histogram(numeric_entry(WINTER), [1.0, None, "n/a", float("nan"), 2.0])

    assert histogram.current_missing == pytest.approx(0.6)
    assert histogram.current_values == 2
    assert sum(histogram.current) == pytest.approx(1.0)


def test_categories_the_reference_never_saw_get_bins_of_their_own() -> None:
    profile = CategoricalProfile(missing_rate=0.0, frequencies={"red": 0.7, "blue": 0.3})
    histogram = categorical_histogram(profile, ["red", "green", "green", "blue", None])

    assert histogram.bins == ["red", "blue", "green"]
    assert histogram.reference == [0.7, 0.3, 0.0]
    assert histogram.current == [0.25, 0.25, 0.5]
    assert histogram.current_missing == pytest.approx(0.2)


def test_every_profiled_feature_gets_a_histogram_even_when_no_row_is_left() -> None:
    profile = ReferenceProfile(rows=2000, features={"temp": numeric_entry(WINTER)})
    histograms = window_histograms("m", 1, 3, profile, [])

    assert histograms.rows == 0
    assert histograms.features["temp"].current == [0.0] * 10
    assert histograms.features["temp"].reference == pytest.approx([0.1] * 10, abs=0.01)


async def test_the_route_bins_the_reports_window_against_its_versions_profile() -> None:
    from .fakes import memory_store

    store = memory_store()
    watched = MonitoredVersion(
        model="churn",
        version=1,
        task="classification",
        target="y",
        features=["temp"],
        profile=ReferenceProfile(rows=2000, features={"temp": numeric_entry(WINTER)}),
        baseline={},
        window_size=100,
        cooldown_windows=0,
    )
    at = datetime(2026, 1, 1, tzinfo=UTC)
    async with store.transaction() as unit:
        await unit.add_monitored(watched)
        await unit.record_predictions(
            "churn",
            1,
            [Prediction(request_id=f"r{i}", inputs={"temp": 40.0}, prediction=1, logged_at=at) for i in range(5)],
        )
        await unit.place_in_windows("churn", 1, {f"r{i}": 2 for i in range(5)})
    async with await client_with(report(2), store=store) as client:
        found = await client.get("/v1/drift/churn/reports/report-2/histograms")
        unknown = await client.get("/v1/drift/churn/reports/nope/histograms")

    assert found.status_code == 200, found.text
    body = found.json()
    assert (body["version"], body["window_index"], body["rows"]) == (1, 2, 5)
    assert body["features"]["temp"]["current"][-1] == 1.0
    assert unknown.status_code == 404
