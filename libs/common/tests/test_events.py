"""Contract tests: every event survives the Kafka record codec, and bad records fail with a reason."""

import uuid
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from mloop_common.errors import PermanentError
from mloop_common.events import (
    ALL_TOPICS,
    PAYLOADS,
    ArtifactPointer,
    DataPublished,
    DataWarning,
    DriftDetected,
    Envelope,
    FeedbackReceived,
    FeedbackRecord,
    InvalidEvent,
    ModelPromoted,
    ModelRegistered,
    ModelRejected,
    ModelRollout,
    ModelServed,
    ModelTrained,
    PredictionRecord,
    PredictionsLogged,
    SpecChanged,
    Topic,
    TrainingFailed,
    dataschema,
    from_record,
    gist,
    new_event,
    to_record,
)

REQUIRED_HEADERS = (
    "ce_specversion",
    "ce_id",
    "ce_type",
    "ce_source",
    "ce_time",
    "ce_subject",
    "ce_dataschema",
    "ce_correlationid",
)


def pointer(kind="models", suffix=".skops"):
    digest = uuid.uuid4().hex * 2
    return ArtifactPointer(uri=f"artifact:{kind}/{digest[:2]}/{digest}{suffix}", sha256=digest)


def moment():
    return datetime(2024, 5, 17, 8, 30, 15, 123456, tzinfo=UTC)


def data_published():
    return DataPublished(
        dataset="churn",
        version=3,
        snapshot=pointer("datasets", ".parquet"),
        rows=1200,
        column_count=3,
        schema_digest="c" * 64,
        contract=pointer("contracts", ".json"),
        target="churned",
        time_column="signup_ts",
        description="weekly export",
        warnings=[DataWarning(check="outliers", message="1 numeric column has values outside the fences")],
    )


def model_trained():
    return ModelTrained(
        model="churn",
        run_id=uuid.uuid4().hex,
        task="classification",
        spec_version=2,
        spec_digest="f" * 64,
        dataset="churn",
        dataset_version=3,
        dataset_sha256="a" * 64,
        trigger="drift.detected",
        artifact=pointer(),
        profile=pointer("profiles", ".json"),
        holdout=pointer("holdouts", ".parquet"),
        features=["usage", "plan"],
        target="churned",
        estimator_class="LogisticRegression",
        params={"C": 0.1, "penalty": None},
        metric="roc_auc",
        cv_score=0.91,
        holdout_metrics={"roc_auc": 0.9, "accuracy": 0.85},
        training_seconds=3.5,
        code_version="62a62f5",
        seed=42,
    )


def model_rejected():
    return ModelRejected(
        model="churn",
        run_id=uuid.uuid4().hex,
        evaluation_id=uuid.uuid4().hex,
        reasons=["roc_auc 0.80 is worse than the champion's 0.90"],
        candidate_metrics={"roc_auc": 0.8},
        champion_version=4,
        champion_metrics={"roc_auc": 0.9},
    )


def model_registered():
    return ModelRegistered(
        model="churn",
        version=5,
        run_id=uuid.uuid4().hex,
        evaluation_id=uuid.uuid4().hex,
        task="classification",
        artifact=pointer(),
        profile=pointer("profiles", ".json"),
        features=["usage", "plan"],
        metrics={"roc_auc": 0.92},
        requires_approval=True,
    )


def model_promoted():
    return ModelPromoted(
        model="churn",
        version=5,
        previous_version=4,
        reason="validator passed",
        task="regression",
        target="churned",
        artifact=pointer(),
        profile=pointer("profiles", ".json"),
        features=["usage"],
        metrics={"rmse": 1.5},
        drift_window=500,
        cooldown_windows=2,
    )


def predictions_logged():
    records = [
        PredictionRecord(
            request_id=uuid.uuid4().hex,
            timestamp=moment(),
            inputs={"usage": 1.5, "plan": "pro"},
            prediction="yes",
            probabilities=[0.25, 0.75],
        ),
        PredictionRecord(
            request_id=uuid.uuid4().hex,
            timestamp=moment(),
            inputs={"usage": None, "plan": None},
            prediction=0,
            route="canary",
        ),
    ]
    return PredictionsLogged(model="churn", version=5, records=records)


def feedback_received():
    return FeedbackReceived(
        model="churn",
        records=[
            FeedbackRecord(request_id=uuid.uuid4().hex, label="no", timestamp=moment()),
            FeedbackRecord(request_id=uuid.uuid4().hex, label=1, timestamp=moment()),
        ],
    )


def drift_detected():
    return DriftDetected(
        model="churn",
        version=5,
        report_id=uuid.uuid4().hex,
        cause="concept",
        action="retrain",
        summary="accuracy fell from 0.90 to 0.70",
        drifted_features=["usage"],
        evidence={"usage": {"psi": 0.4, "drifted": True}},
        window_size=1000,
        recent_data=pointer("recent", ".parquet"),
        recent_rows=800,
    )


def model_rollout():
    return ModelRollout(
        model="churn", alias="canary", version=6, previous_version=4, reason="policy", canary_percent=20
    )


def model_served():
    return ModelServed(
        model="churn",
        alias="production",
        version=6,
        instance="serving-1",
        loaded=False,
        error="UntrustedModelError: untrusted type",
        serving_version=5,
    )


def spec_changed():
    return SpecChanged(model="churn", spec_version=3, spec_digest="d" * 64, dataset="churn-data")


def training_failed():
    return TrainingFailed(
        model="churn",
        run_id=uuid.uuid4().hex,
        failure="over_budget",
        error="the run needed more memory than its budget of 2048 MB",
        trigger="data.published",
        spec_version=2,
        dataset="churn",
        dataset_version=3,
    )


SAMPLES = {
    Topic.DATA_PUBLISHED: data_published,
    Topic.MODEL_TRAINED: model_trained,
    Topic.MODEL_REJECTED: model_rejected,
    Topic.MODEL_REGISTERED: model_registered,
    Topic.MODEL_PROMOTED: model_promoted,
    Topic.PREDICTIONS_LOGGED: predictions_logged,
    Topic.FEEDBACK_RECEIVED: feedback_received,
    Topic.DRIFT_DETECTED: drift_detected,
    Topic.MODEL_ROLLOUT: model_rollout,
    Topic.MODEL_SERVED: model_served,
    Topic.SPEC_CHANGED: spec_changed,
    Topic.TRAINING_FAILED: training_failed,
}


def valid_record(subject="churn"):
    return to_record(new_event(data_published(), source="mloop/test", subject=subject))


def replace_header(headers, name, value):
    return [(k, value if k == name else v) for k, v in headers]


def test_every_payload_type_has_a_sample_here():
    assert set(SAMPLES) == set(PAYLOADS)


@pytest.mark.parametrize("topic", ALL_TOPICS)
def test_payload_survives_the_record_round_trip_unchanged(topic):
    payload = SAMPLES[topic]()
    event = new_event(payload, source="mloop/test", subject="churn")

    _key, value, headers = to_record(event)
    decoded = from_record(value, headers)

    assert decoded.payload() == payload
    assert type(decoded.payload()) is PAYLOADS[topic]
    assert decoded == event


@pytest.mark.parametrize("topic", ALL_TOPICS)
def test_record_carries_every_cloudevents_header(topic):
    event = new_event(SAMPLES[topic](), source="mloop/test", subject="churn")

    _key, _value, headers = to_record(event)
    names = dict(headers)

    assert set(REQUIRED_HEADERS) <= set(names)
    assert names["ce_specversion"] == b"1.0"
    assert names["ce_type"] == topic.encode()
    assert names["ce_dataschema"] == dataschema(topic).encode()
    assert names["content-type"] == b"application/json"
    assert names["ce_time"].endswith(b"Z")


def test_record_key_is_the_subject():
    key, _value, _headers = valid_record(subject="fraud-detector")

    assert key == b"fraud-detector"


def test_caused_event_keeps_the_correlation_id_and_names_its_cause():
    root = new_event(data_published(), source="mloop/ingest", subject="churn")
    trained = new_event(model_trained(), source="mloop/trainer", subject="churn", cause=root)
    rejected = new_event(model_rejected(), source="mloop/validator", subject="churn", cause=trained)

    decoded = from_record(*to_record(rejected)[1:])

    assert root.correlationid == root.id and root.causationid is None
    assert trained.correlationid == root.id and trained.causationid == root.id
    assert decoded.correlationid == root.id and decoded.causationid == trained.id


def test_trace_context_travels_in_headers():
    traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    event = new_event(data_published(), source="mloop/test", subject="churn").with_trace(traceparent, "k=v")

    decoded = from_record(*to_record(event)[1:])

    assert (decoded.traceparent, decoded.tracestate) == (traceparent, "k=v")


# data.published is at v2: the schema became a digest and a pointer instead of every column name.
SCHEMA_VERSIONS = {"data.published": 2}


@pytest.mark.parametrize("topic", ALL_TOPICS)
def test_dataschema_names_topic_and_its_version(topic):
    assert dataschema(topic) == f"urn:mloop:schema:{topic}:v{SCHEMA_VERSIONS.get(topic, 1)}"


def test_a_v1_data_published_read_back_from_the_topic_still_decodes():
    v1 = {
        "schema_version": 1,
        "dataset": "churn",
        "version": 1,
        "snapshot": pointer("datasets", ".parquet").model_dump(),
    }
    v1 |= {"rows": 10, "columns": ["usage", "churned"], "target": "churned", "time_column": None}
    event = new_event(data_published(), source="mloop/ingest", subject="churn")

    decoded = replace(event, data=v1).decode(DataPublished)

    assert (decoded.schema_version, decoded.rows, decoded.contract, decoded.warnings) == (1, 10, None, [])


def test_invalid_event_is_permanent():
    assert issubclass(InvalidEvent, PermanentError)


@pytest.mark.parametrize("missing", ["ce_id", "ce_type", "ce_source", "ce_time", "ce_specversion"])
def test_record_without_required_header_is_invalid_and_names_it(missing):
    _key, value, headers = valid_record()

    with pytest.raises(InvalidEvent, match=f"missing header.*{missing}"):
        from_record(value, [(k, v) for k, v in headers if k != missing])


def test_record_without_any_headers_is_not_a_cloudevent():
    _key, value, _headers = valid_record()

    with pytest.raises(InvalidEvent, match="not a CloudEvent"):
        from_record(value, [])


@pytest.mark.parametrize("value", [b"{not json", b"", None, b"\xff\xfe"])
def test_record_value_that_is_not_json_is_invalid(value):
    _key, _value, headers = valid_record()

    with pytest.raises(InvalidEvent, match="not JSON"):
        from_record(value, headers)


@pytest.mark.parametrize("value", [b"[1, 2]", b'"text"', b"42", b"null"])
def test_record_value_that_is_not_a_json_object_is_invalid(value):
    _key, _value, headers = valid_record()

    with pytest.raises(InvalidEvent, match="must be a JSON object"):
        from_record(value, headers)


@pytest.mark.parametrize("time", [b"yesterday", b"2024-13-45T00:00:00Z", b""])
def test_record_with_unparseable_time_is_invalid(time):
    _key, value, headers = valid_record()

    with pytest.raises(InvalidEvent, match="ce_time .* is not RFC 3339"):
        from_record(value, replace_header(headers, "ce_time", time))


def test_record_with_other_specversion_is_invalid():
    _key, value, headers = valid_record()

    with pytest.raises(InvalidEvent, match="unsupported ce_specversion '0.3'"):
        from_record(value, replace_header(headers, "ce_specversion", b"0.3"))


def test_record_with_non_utf8_header_is_invalid_and_names_the_header():
    _key, value, headers = valid_record()

    with pytest.raises(InvalidEvent, match="header 'ce_source' is not UTF-8"):
        from_record(value, replace_header(headers, "ce_source", b"\xff\xfemloop"))


def test_payload_of_unknown_event_type_is_invalid():
    event = Envelope(type="model.exploded", source="mloop/test", subject="churn", data={})

    with pytest.raises(InvalidEvent, match="unknown event type 'model.exploded'"):
        event.payload()


def test_payload_with_missing_field_is_invalid_and_names_the_field():
    event = new_event(data_published(), source="mloop/test", subject="churn")
    _key, value, headers = to_record(event)
    decoded = from_record(value.replace(b'"target":"churned",', b""), headers)

    with pytest.raises(InvalidEvent, match=r"(?s)invalid data.published payload.*\ntarget\n"):
        decoded.payload()


def test_payload_from_a_newer_producer_with_an_extra_field_is_still_read():
    event = new_event(data_published(), source="mloop/test", subject="churn")
    decoded = Envelope(
        type=event.type, source=event.source, subject=event.subject, data={**event.data, "added_in_a_later_release": 1}
    )

    assert decoded.payload() == event.payload()


def test_an_events_gist_says_what_happened_and_is_empty_for_a_payload_it_does_not_know() -> None:
    published = Envelope(
        type="data.published", source="ingest", subject="rain", data={"dataset": "rain", "version": 3, "rows": 7300}
    )
    promoted = Envelope(
        type="model.promoted", source="registry", subject="rain", data={"version": 2, "reason": "policy"}
    )
    older = Envelope(type="data.published", source="ingest", subject="rain", data={"dataset": "rain"})

    assert gist(published) == "rain v3, 7,300 rows"
    assert gist(promoted) == "v2 is production (policy)"
    assert gist(older) == ""
