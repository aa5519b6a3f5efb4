"""The invariant checker on hand-made observations: silent on a clean history, loud on each kind of fault."""

from __future__ import annotations

import copy
from typing import Any

from mloop_common.events import Envelope
from tests.faults.invariants import Observed, check

MODEL = "churn"


def event(topic: str, data: dict[str, Any], *, id: str, subject: str = MODEL) -> Envelope:
    return Envelope(type=topic, source="test", subject=subject, data=data, id=id)


def clean() -> Observed:
    """One dataset version trained, validated, registered, promoted, and two predictions logged."""
    return Observed(
        models={MODEL},
        events={
            "data.published": [event("data.published", {"dataset": MODEL, "version": 1}, id="pub-1")],
            "model.trained": [event("model.trained", {"model": MODEL, "run_id": "run-1"}, id="trained-1")],
            "model.registered": [event("model.registered", {"model": MODEL, "version": 1}, id="reg-1")],
            "model.promoted": [event("model.promoted", {"model": MODEL, "version": 1}, id="prom-1")],
            "predictions.logged": [
                event("predictions.logged", {"records": [{"request_id": "q1"}, {"request_id": "q2"}]}, id="log-1")
            ],
        },
        runs=[{"run_id": "run-1", "model": MODEL, "status": "succeeded", "trigger_event_id": "pub-1"}],
        evaluations=[{"run_id": "run-1", "decision": "registered"}],
        versions=[{"model": MODEL, "version": 1, "run_id": "run-1"}],
        audit=[
            {"action": "version.registered", "model": MODEL, "version": 1, "detail": {}},
            {"action": "alias.moved", "model": MODEL, "version": 1, "detail": {"alias": "production"}},
        ],
        acknowledged_datasets={(MODEL, 1)},
        served={MODEL: ["q1", "q2"]},
        stored_predictions={"q1", "q2"},
    )


def kinds(observed: Observed) -> list[str]:
    return sorted({v.invariant for v in check(observed)})


def test_a_clean_history_has_no_violation() -> None:
    assert check(clean()) == []


def test_redeliveries_of_the_same_event_are_allowed() -> None:
    observed = clean()
    for topic, events in observed.events.items():
        observed.events[topic] = events + copy.deepcopy(events)  # every record twice, same ids

    assert check(observed) == []
    assert observed.redeliveries("model.trained") == 1


def test_an_acknowledged_event_missing_from_its_topic_is_lost() -> None:
    observed = clean()
    del observed.events["data.published"]

    violations = check(observed)

    assert [v.invariant for v in violations] == ["lost"]
    assert "acknowledged by ingest" in violations[0].detail


def test_a_registered_version_without_its_event_is_lost() -> None:
    observed = clean()
    observed.events["model.registered"] = []

    assert kinds(observed) == ["lost"]


def test_a_trained_model_never_evaluated_is_lost() -> None:
    observed = clean()
    observed.evaluations = []

    assert kinds(observed) == ["lost"]


def test_a_second_run_for_one_trigger_is_an_effect_applied_twice() -> None:
    observed = clean()
    observed.runs.append({"run_id": "run-2", "model": MODEL, "status": "failed", "trigger_event_id": "pub-1"})

    violations = check(observed)

    assert [v.invariant for v in violations] == ["twice"]
    assert "pub-1" in violations[0].detail


def test_a_second_promotion_of_one_version_is_an_effect_applied_twice() -> None:
    observed = clean()
    observed.audit.append(observed.audit[-1])
    observed.events["model.promoted"].append(event("model.promoted", {"model": MODEL, "version": 1}, id="prom-2"))

    assert [v.invariant for v in check(observed)] == ["twice", "twice"]


def test_two_versions_for_one_model_trained_are_refused() -> None:
    observed = clean()
    observed.versions.append({"model": MODEL, "version": 2, "run_id": "run-1"})
    observed.events["model.registered"].append(event("model.registered", {"model": MODEL, "version": 2}, id="reg-2"))
    observed.audit.append({"action": "version.registered", "model": MODEL, "version": 2, "detail": {}})

    assert kinds(observed) == ["twice", "versions"]


def test_a_model_trained_without_a_version_or_a_rejection_is_refused() -> None:
    observed = clean()
    observed.versions = []
    observed.events["model.registered"] = []
    observed.audit = []
    observed.events["model.promoted"] = []

    assert kinds(observed) == ["versions"]
    observed.events["model.rejected"] = [event("model.rejected", {"model": MODEL, "run_id": "run-1"}, id="rej-1")]
    assert check(observed) == []


def test_versions_of_a_key_going_back_break_its_order() -> None:
    observed = clean()
    observed.events["data.published"] = [
        event("data.published", {"dataset": MODEL, "version": 2}, id="pub-2"),
        event("data.published", {"dataset": MODEL, "version": 1}, id="pub-1"),
    ]
    observed.runs.append({"run_id": "run-2", "model": MODEL, "status": "failed", "trigger_event_id": "pub-2"})

    violations = check(observed)

    assert [v.invariant for v in violations] == ["order"]
    assert "v1 after v2" in violations[0].detail


def test_a_redelivery_of_an_older_event_does_not_break_order() -> None:
    observed = clean()
    first = observed.events["data.published"][0]
    second = event("data.published", {"dataset": MODEL, "version": 2}, id="pub-2")
    observed.events["data.published"] = [first, second, first, second]  # a relay republished both
    observed.acknowledged_datasets.add((MODEL, 2))
    observed.runs.append({"run_id": "run-2", "model": MODEL, "status": "failed", "trigger_event_id": "pub-2"})

    assert check(observed) == []


def test_a_prediction_logged_twice_or_never_is_refused() -> None:
    observed = clean()
    observed.events["predictions.logged"].append(
        event("predictions.logged", {"records": [{"request_id": "q1"}]}, id="log-2")
    )
    observed.served[MODEL].append("q3")

    details = [v.detail for v in check(observed) if v.invariant == "predictions"]

    assert details == [f"{MODEL} request q1: logged 2 times", f"{MODEL} request q3: logged 0 times"]
