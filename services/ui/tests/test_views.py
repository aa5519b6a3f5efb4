"""What the pages show, computed from the services' answers (pure): tables, history, lineage, figures."""

from __future__ import annotations

from typing import Any

from mloop_ui import views

SHA = "af757ca9cba2eacd5ab601cacd5387395634cecc8c9b7d4d7877da053ecc48ba"


def audit_entry(id: int, action: str, version: int | None, **detail: Any) -> dict[str, Any]:
    return {
        "id": id,
        "at": f"2026-12-01T07:{id:02d}:00Z",
        "actor": "carol",
        "action": action,
        "model": "rain",
        "version": version,
        "detail": detail,
    }


AUDIT = [  # newest first, as the registry lists it
    audit_entry(5, "version.registered", 3),
    audit_entry(4, "alias.moved", 2, alias="production", previous_version=1, reason="approved"),
    audit_entry(3, "version.approved", 2, comment="better on winter"),
    audit_entry(2, "alias.moved", 1, alias="production", previous_version=None, reason="policy"),
    audit_entry(1, "spec.created", None),
]


def version(number: int, status: str, run: str) -> dict[str, Any]:
    return {
        "model": "rain",
        "version": number,
        "run_id": run,
        "evaluation_id": f"e{number}",
        "status": status,
        "created_at": f"2026-12-01T06:0{number}:00Z",
        "artifact": {"sha256": "ab" * 32},
    }


VERSIONS = [version(1, "registered", "r1"), version(2, "approved", "r2"), version(3, "pending_approval", "r3")]


def test_the_models_table_shows_production_rollouts_pending_versions_the_last_promotion_and_drift() -> None:
    models = [
        {
            "name": "rain",
            "dataset": "rain-data",
            "spec": {"metric": "accuracy"},
            "aliases": {"production": 2, "canary": 3, "gold": 1},
        }
    ]
    drift = {"cause": "covariate_shift", "action": "investigate", "drift_detected": True}

    [row] = views.model_rows(models, {"rain": VERSIONS}, {"rain": drift}, AUDIT)

    assert (row.production, row.rollouts, row.labels) == (2, {"canary": 3}, {"gold": 1})
    assert (row.versions, row.latest_status, row.pending) == (3, "pending_approval", 1)
    assert row.last_promotion == "2026-12-01T07:04:00Z"  # the newest production move, not the first
    assert row.drift == drift


def test_each_run_shows_the_steps_it_went_through_and_where_it_stopped() -> None:
    runs = [
        {"run_id": "r4", "status": "failed", "error": "feature 'x9' is missing", "finished_at": "t4"},
        {
            "run_id": "r5",
            "status": "succeeded",
            "estimator_class": "LogisticRegression",
            "finished_at": "t5",
            "holdout_metrics": {"accuracy": 0.61},
        },
        {"run_id": "r3", "status": "succeeded", "finished_at": "t3"},
        {"run_id": "r2", "status": "succeeded", "finished_at": "t2", "holdout_metrics": {"accuracy": 0.8}},
    ]
    evaluations = [
        {"run_id": "r5", "decision": "rejected", "reasons": ["accuracy fell below the floor 0.7"], "created_at": "e5"},
        {"run_id": "r3", "decision": "registered", "reasons": [], "created_at": "e3"},
        {"run_id": "r2", "decision": "registered", "reasons": ["+0.05 over v1"], "created_at": "e2"},
    ]

    failed, rejected, pending, released = views.history("rain", "accuracy", runs, evaluations, VERSIONS, AUDIT)

    assert [(s.name, s.state) for s in failed.steps] == [("failed", "failed")]
    assert "x9" in failed.steps[0].detail
    assert [(s.name, s.state) for s in rejected.steps] == [
        ("trained", "done"),
        ("evaluated", "failed"),
        ("rejected", "failed"),
    ]
    assert rejected.version is None and "0.6100" in rejected.steps[0].detail
    assert [(s.name, s.state) for s in pending.steps] == [
        ("trained", "done"),
        ("evaluated", "done"),
        ("registered", "done"),
        ("approved", "waiting"),
    ]
    assert [s.name for s in released.steps] == ["trained", "evaluated", "registered", "approved", "promoted"]
    assert released.steps[3].detail == "carol: better on winter"
    assert released.steps[2].href == "/models/rain/versions/2"


def test_the_lineage_graph_runs_from_the_dataset_snapshot_to_the_versions_promotions() -> None:
    lineage = {
        "dataset": "rain-data",
        "dataset_version": 4,
        "dataset_sha256": SHA,
        "recent_data_sha256": "cd" * 32,
        "estimator_class": "LogisticRegression",
        "trigger": "drift.detected",
        "code_version": "4972f6b7",
        "champion_version": 1,
    }
    found = {**version(2, "approved", "r2"), "lineage": lineage}

    graph = views.lineage_graph("rain", found, AUDIT)

    by_id = {n.id: n for n in graph.nodes}
    assert set(by_id) == {"dataset", "recent", "run", "evaluation", "version", "promotion-4"}
    assert "".join(by_id["dataset"].lines[1:]) == SHA  # the whole digest, on two lines
    assert by_id["dataset"].href == "/datasets/rain-data#v4"
    assert by_id["promotion-4"].title == "→ production"
    edges = {(a.id, b.id) for a, b in graph.edges}
    assert ("dataset", "run") in edges and ("recent", "run") in edges and ("version", "promotion-4") in edges
    assert all(a.x < b.x for a, b in graph.edges)  # left to right
    assert all(n.x + views.NODE_W <= graph.width and n.y + views.NODE_H <= graph.height for n in graph.nodes)


def drift_report(window: int, statistic: float, drifted: bool, **performance: Any) -> dict[str, Any]:
    return {
        "id": f"w{window}",
        "version": 1,
        "window_index": window,
        "created_at": f"2026-12-01T07:0{window}:00Z",
        "report": {
            "features": {
                "temp": {"tests": [{"method": "ks", "statistic": statistic, "threshold": 0.1, "drifted": drifted}]},
                "wind": {"tests": [{"method": "ks", "statistic": 0.05, "threshold": 0.1, "drifted": False}]},
            },
            "performance": performance,
        },
    }


def test_each_features_statistic_is_drawn_over_windows_with_its_threshold_line_drifted_features_first() -> None:
    details = [drift_report(2, 0.3, True), drift_report(1, 0.04, False)]

    temp, wind = views.feature_figures(details)

    statistic, threshold = temp["data"]
    assert temp["layout"]["title"]["text"] == "temp"
    assert statistic["x"] == ["v1 w1", "v1 w2"] and statistic["y"] == [0.04, 0.3]
    assert threshold["name"] == "threshold" and threshold["y"] == [0.1, 0.1]
    assert statistic["marker"]["color"] == [views.CANDIDATE, views.BAD]
    assert wind["layout"]["title"]["text"] == "wind"


def test_performance_over_windows_shows_the_estimate_with_its_band_and_the_measured_metric() -> None:
    estimated = {"accuracy": {"value": 0.7, "lower": 0.65, "upper": 0.75}}
    details = [
        drift_report(
            1, 0.1, False, metric="accuracy", estimated=estimated, metrics={}, baseline={"accuracy": 0.8}, limit=0.75
        ),
        drift_report(
            2,
            0.1,
            False,
            metric="accuracy",
            estimated=estimated,
            metrics={"accuracy": 0.6},
            baseline={"accuracy": 0.8},
            limit=0.75,
        ),
    ]

    figure = views.performance_figure(details)

    assert figure is not None
    traces = {t["name"]: t for t in figure["data"]}
    assert traces["estimate band"]["y"] == [0.65, 0.65] and traces["estimate upper"]["y"] == [0.75, 0.75]
    assert traces["actual accuracy (labels)"]["y"] == [None, 0.6]
    assert traces["tolerated limit"]["y"] == [0.75, 0.75]
    assert views.performance_figure([drift_report(1, 0.1, False)]) is None


def test_histograms_show_reference_against_current_drifted_features_first() -> None:
    histograms = {
        "features": {
            "a": {
                "bins": ["0 to 1", "above 1"],
                "reference": [1.0, 0.0],
                "current": [0.2, 0.8],
                "current_values": 10,
                "current_missing": 0.0,
            },
            "b": {"bins": ["red"], "reference": [1.0], "current": [1.0], "current_values": 10, "current_missing": 0.5},
        }
    }

    b, a = views.histogram_figures(histograms, first=["b"])

    assert b["layout"]["title"]["text"] == "b (10 values, 50% missing)"
    reference, current = a["data"]
    assert (reference["name"], current["name"]) == ("reference (training)", "current window")
    assert current["x"] == ["0 to 1", "above 1"] and current["y"] == [0.2, 0.8]


def test_the_metric_over_versions_separates_registered_and_rejected_candidates() -> None:
    evaluations = [
        {
            "run_id": "r1",
            "decision": "registered",
            "created_at": "t1",
            "candidate_metrics": {"accuracy": 0.8},
            "champion_metrics": None,
        },
        {
            "run_id": "r5",
            "decision": "rejected",
            "created_at": "t5",
            "candidate_metrics": {"accuracy": 0.6},
            "champion_metrics": {"accuracy": 0.8},
        },
    ]

    registered, rejected, champion = views.metric_over_versions("accuracy", evaluations, VERSIONS)["data"]

    assert (registered["y"], registered["text"]) == ([0.8], ["v1"])
    assert rejected["y"] == [0.6] and champion["y"] == [0.8]
