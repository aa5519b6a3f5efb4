"""The event contract: topics, payload models and the CloudEvents 1.0 envelope.

Events travel in CloudEvents binary content mode over Kafka: the payload JSON is the
record value and every context attribute is a ``ce_`` header, so plain Kafka tools
and the official CloudEvents SDKs can read every message.
"""

from __future__ import annotations

import builtins
import uuid
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Final, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mloop_common.errors import PayloadTooLarge, PermanentError
from mloop_common.jsoncodec import json_loads, json_record


class Topic(StrEnum):
    DATA_PUBLISHED = "data.published"
    MODEL_TRAINED = "model.trained"
    MODEL_REJECTED = "model.rejected"
    MODEL_REGISTERED = "model.registered"
    MODEL_PROMOTED = "model.promoted"
    PREDICTIONS_LOGGED = "predictions.logged"
    FEEDBACK_RECEIVED = "feedback.received"
    DRIFT_DETECTED = "drift.detected"
    MODEL_ROLLOUT = "model.rollout"
    MODEL_SERVED = "model.served"
    SPEC_CHANGED = "spec.changed"
    TRAINING_FAILED = "training.failed"


ALL_TOPICS: tuple[str, ...] = tuple(t.value for t in Topic)

# Registry aliases a version can hold (model.promoted names the one that moved).
PRODUCTION: Final = "production"
CHALLENGER: Final = "challenger"
# Rollout aliases: a candidate served beside production (canary: a share of traffic; shadow: scored on a copy).
CANARY: Final = "canary"
SHADOW: Final = "shadow"
SPEC_VERSION = "1.0"
CONTENT_TYPE = "application/json"


def dlq_topic(topic: str) -> str:
    """Name of the dead-letter topic for ``topic``."""
    return f"{topic}.dlq"


class InvalidEvent(PermanentError):
    """A Kafka record that is not a valid mloop CloudEvent."""

    code = "invalid_event"


# --- payloads ---------------------------------------------------------------------


class Payload(BaseModel):
    # Tolerant reader: a field added by a newer producer must not dead-letter on an older consumer.
    model_config = ConfigDict(extra="ignore", frozen=True)
    schema_version: int = 1


class ArtifactPointer(BaseModel):
    """An artifact URI plus the digest a reader must verify."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    uri: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class DataWarning(BaseModel):
    """A check that warned on a published dataset version (its message cut to MAX_WARNING_CHARS)."""

    model_config = ConfigDict(extra="ignore", frozen=True)
    check: str
    message: str


MAX_WARNING_CHARS = 300


class DataPublished(Payload):
    """v2: the schema travels as a digest and a pointer to the stored contract, not as column names, so the
    event stays small however wide the dataset (v1 listed every column under ``columns``)."""

    schema_version: int = 2
    dataset: str
    version: int
    snapshot: ArtifactPointer
    rows: int
    target: str
    time_column: str | None = None
    description: str | None = None
    # Null only in a v1 event read back (a replayed topic): a tolerant reader accepts both versions.
    column_count: int | None = None
    schema_digest: str | None = Field(None, description="DatasetContract.digest: equal digests, same schema")
    contract: ArtifactPointer | None = Field(None, description="the version's DatasetContract, JSON")
    warnings: list[DataWarning] = []


class ModelTrained(Payload):
    model: str
    run_id: str
    task: Literal["classification", "regression"]
    spec_version: int
    spec_digest: str
    dataset: str
    dataset_version: int
    dataset_sha256: str
    recent_data_sha256: str | None = None
    trigger: Literal["data.published", "drift.detected", "spec.changed"]
    artifact: ArtifactPointer
    profile: ArtifactPointer
    holdout: ArtifactPointer
    features: list[str]
    target: str
    estimator_class: str
    params: dict[str, Any]
    metric: str
    cv_score: float
    holdout_metrics: dict[str, float]
    training_seconds: float
    code_version: str
    seed: int


class ModelRejected(Payload):
    model: str
    run_id: str
    evaluation_id: str
    reasons: list[str]
    candidate_metrics: dict[str, float]
    champion_version: int | None = None
    champion_metrics: dict[str, float] | None = None


class ModelRegistered(Payload):
    model: str
    version: int
    run_id: str
    evaluation_id: str
    task: Literal["classification", "regression"]
    artifact: ArtifactPointer
    profile: ArtifactPointer
    features: list[str]
    metrics: dict[str, float]
    requires_approval: bool


class ModelPromoted(Payload):
    model: str
    version: int
    alias: str = PRODUCTION
    previous_version: int | None = None
    reason: str
    task: Literal["classification", "regression"]
    target: str
    artifact: ArtifactPointer
    profile: ArtifactPointer
    features: list[str]
    metrics: dict[str, float]
    drift_window: int = 1000
    cooldown_windows: int = 3
    # The version's spec: its whole drift policy (drift reads what it knows of it), primary metric and time column.
    drift_policy: dict[str, Any] = Field(default_factory=dict)
    metric: str | None = None
    time_column: str | None = None


class PredictionRecord(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    request_id: str
    timestamp: datetime
    inputs: dict[str, Any]
    prediction: Any
    probabilities: list[float] | None = None
    # champion: production; canary: its traffic share; shadow: scored on a copy, never returned;
    # challenger: a version the client addressed explicitly.
    route: Literal["champion", "canary", "shadow", "challenger"] = "champion"
    truncated: bool = False  # inputs replaced by a marker: the record alone was over the broker's message limit


class PredictionsLogged(Payload):
    model: str
    version: int
    records: list[PredictionRecord]


class FeedbackRecord(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    request_id: str
    label: Any
    timestamp: datetime


class FeedbackReceived(Payload):
    model: str
    records: list[FeedbackRecord]


class DriftDetected(Payload):
    model: str
    version: int
    report_id: str
    cause: str | None
    action: Literal["retrain", "investigate"]
    summary: str
    drifted_features: list[str]
    evidence: dict[str, Any]
    window_size: int
    recent_data: ArtifactPointer | None = None
    recent_rows: int = 0


class ModelRollout(Payload):
    """A rollout alias (canary, shadow, challenger) moved or was cleared; serving asks the registry where all point."""

    model: str
    alias: str
    version: int | None  # None: the alias was cleared (rolled back, or its version became production)
    previous_version: int | None = None
    reason: str
    canary_percent: float = 0


class ModelServed(Payload):
    """A serving instance's attempt to load the version an alias names: loaded, or failed and why."""

    model: str
    alias: str
    version: int
    instance: str
    loaded: bool
    error: str | None = None
    serving_version: int | None = None  # what this instance serves under the alias now


class SpecChanged(Payload):
    """A new spec version of ``model`` was stored: the trainer trains it on the dataset's newest version at once,
    rather than at the dataset's next publication."""

    model: str
    spec_version: int
    spec_digest: str
    dataset: str


class TrainingFailed(Payload):
    """A run that could not succeed (bad data, over its limits or budget, its worker died): recorded by the
    trainer, announced so that people hear of it (the registry's alerts); nothing downstream trains on it."""

    model: str
    run_id: str
    failure: str = Field(description="data, limits, over_budget, worker_died or job_failed")
    error: str
    trigger: Literal["data.published", "drift.detected", "spec.changed"]
    spec_version: int
    dataset: str
    dataset_version: int


PAYLOADS: dict[str, type[Payload]] = {
    Topic.DATA_PUBLISHED: DataPublished,
    Topic.MODEL_TRAINED: ModelTrained,
    Topic.MODEL_REJECTED: ModelRejected,
    Topic.MODEL_REGISTERED: ModelRegistered,
    Topic.MODEL_PROMOTED: ModelPromoted,
    Topic.PREDICTIONS_LOGGED: PredictionsLogged,
    Topic.FEEDBACK_RECEIVED: FeedbackReceived,
    Topic.DRIFT_DETECTED: DriftDetected,
    Topic.MODEL_ROLLOUT: ModelRollout,
    Topic.MODEL_SERVED: ModelServed,
    Topic.SPEC_CHANGED: SpecChanged,
    Topic.TRAINING_FAILED: TrainingFailed,
}
TOPIC_OF: dict[type[Payload], str] = {model: topic for topic, model in PAYLOADS.items()}
P = TypeVar("P", bound=Payload)


def dataschema(topic: str) -> str:
    """The versioned schema URI of ``topic``'s payload."""
    version = PAYLOADS[topic].model_fields["schema_version"].default
    return f"urn:mloop:schema:{topic}:v{version}"


# --- envelope -----------------------------------------------------------------------


@dataclass(frozen=True)
class Envelope:
    """A CloudEvent as mloop carries it: context attributes plus a JSON payload."""

    type: str
    source: str
    subject: str
    data: dict[str, Any]
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    time: datetime = field(default_factory=lambda: datetime.now(UTC))
    correlationid: str = ""
    causationid: str | None = None
    dataschema: str = ""
    traceparent: str | None = None
    tracestate: str | None = None

    @property
    def topic(self) -> str:
        return self.type

    @property
    def key(self) -> str:
        """Partition key: the model or dataset name keeps one model's events ordered."""
        return self.subject

    def payload(self) -> Payload:
        """The validated payload model of whatever type this event has (for tools that read any topic)."""
        model = PAYLOADS.get(self.type)
        if model is None:
            raise InvalidEvent(f"unknown event type {self.type!r}")
        return self.decode(model)

    def decode(self, payload_type: builtins.type[P]) -> P:
        """The payload as ``payload_type``; a wrong type or an invalid payload is a permanent failure."""
        if TOPIC_OF.get(payload_type, self.type) != self.type:
            raise InvalidEvent(f"a {self.type!r} event does not carry a {payload_type.__name__} payload")
        try:
            return payload_type.model_validate(self.data)
        except ValidationError as exc:
            raise InvalidEvent(f"invalid {self.type} payload: {exc}") from exc

    def with_trace(self, traceparent: str | None, tracestate: str | None = None) -> Envelope:
        return replace(self, traceparent=traceparent, tracestate=tracestate)


def new_event(
    payload: Payload,
    *,
    source: str,
    subject: str,
    cause: Envelope | None = None,
    correlation_id: str | None = None,
    causation_id: str | None = None,
) -> Envelope:
    """Wrap ``payload`` in an envelope; ``cause`` (or the explicit ids) links it into its chain."""
    if cause is not None:
        correlation_id, causation_id = cause.correlationid, cause.id
    return event_of_data(
        TOPIC_OF[type(payload)],
        payload.model_dump(mode="json"),
        source=source,
        subject=subject,
        correlation_id=correlation_id,
        causation_id=causation_id,
    )


def event_of_data(
    topic: str,
    data: dict[str, Any],
    *,
    source: str,
    subject: str,
    correlation_id: str | None = None,
    causation_id: str | None = None,
) -> Envelope:
    """An envelope around ``data``, already the JSON form of ``topic``'s payload (``new_event`` for a producer that
    builds that form itself, faster than pydantic would)."""
    event_id = str(uuid.uuid4())
    return Envelope(
        id=event_id,
        type=topic,
        source=source,
        subject=subject,
        data=data,
        correlationid=correlation_id or event_id,
        causationid=causation_id,
        dataschema=dataschema(topic),
    )


_REQUIRED = ("specversion", "id", "type", "source", "time")
Header = tuple[str, bytes]


def to_record(event: Envelope) -> tuple[bytes, bytes, list[Header]]:
    """Kafka key, value and headers of ``event`` (CloudEvents Kafka binding, binary mode)."""
    attrs: dict[str, str | None] = {
        "ce_specversion": SPEC_VERSION,
        "ce_id": event.id,
        "ce_type": event.type,
        "ce_source": event.source,
        "ce_subject": event.subject,
        "ce_time": event.time.isoformat().replace("+00:00", "Z"),
        "ce_dataschema": event.dataschema or None,
        "ce_correlationid": event.correlationid,
        "ce_causationid": event.causationid,
        "content-type": CONTENT_TYPE,
        "traceparent": event.traceparent,
        "tracestate": event.tracestate,
    }
    headers = [(k, v.encode()) for k, v in attrs.items() if v]
    value = json_record(event.data)
    return event.key.encode(), value, headers


# Largest encoded record mloop produces: under the broker's default limit for one message (1 MiB),
# leaving room for the record framing and for the headers a dead-letter copy adds.
MAX_MESSAGE_BYTES = 900_000


def record_size(key: bytes, value: bytes, headers: list[Header]) -> int:
    """Bytes of a record's key, value and headers: what the broker's message size limit counts, minus framing."""
    return len(key) + len(value) + sum(len(name.encode()) + len(raw) for name, raw in headers)


def ensure_fits(topic: str, key: bytes, value: bytes, headers: list[Header], limit: int = MAX_MESSAGE_BYTES) -> None:
    """Refuse a record of more than ``limit`` bytes where it is created, before anything is stored or sent."""
    size = record_size(key, value, headers)
    if size > limit:
        raise PayloadTooLarge(
            f"an event for topic {topic!r} is {size} bytes encoded, over the {limit}-byte limit for one Kafka "
            "message; store the bulk as an artifact and send its pointer instead"
        )


def from_record(value: bytes | None, headers: list[Header] | tuple[Header, ...]) -> Envelope:
    """Decode a Kafka record into an envelope, or raise ``InvalidEvent`` saying why."""
    attrs = {}
    for name, raw in headers or ():
        try:
            attrs[name] = raw.decode() if raw is not None else ""
        except UnicodeDecodeError as exc:
            raise InvalidEvent(f"header {name!r} is not UTF-8") from exc
    missing = [a for a in _REQUIRED if f"ce_{a}" not in attrs]
    if missing:
        raise InvalidEvent(f"not a CloudEvent: missing header(s) {', '.join('ce_' + m for m in missing)}")
    if attrs["ce_specversion"] != SPEC_VERSION:
        raise InvalidEvent(f"unsupported ce_specversion {attrs['ce_specversion']!r}")
    try:
        data = json_loads(value or b"")
    except ValueError as exc:
        raise InvalidEvent(f"record value is not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise InvalidEvent("record value must be a JSON object")
    try:
        time = datetime.fromisoformat(attrs["ce_time"].replace("Z", "+00:00"))
    except ValueError as exc:
        raise InvalidEvent(f"ce_time {attrs['ce_time']!r} is not RFC 3339") from exc
    return Envelope(
        id=attrs["ce_id"],
        type=attrs["ce_type"],
        source=attrs["ce_source"],
        subject=attrs.get("ce_subject", ""),
        time=time,
        data=data,
        correlationid=attrs.get("ce_correlationid", attrs["ce_id"]),
        causationid=attrs.get("ce_causationid"),
        dataschema=attrs.get("ce_dataschema", ""),
        traceparent=attrs.get("traceparent"),
        tracestate=attrs.get("tracestate"),
    )


def gist(event: Envelope) -> str:
    """What the event says happened, in a few words (for people: `mloop trace`, the web UI's pipeline);
    empty for a payload older or newer than this code knows."""
    try:
        return _gist(event.type, event.data)
    except (KeyError, TypeError):
        return ""


def _gist(kind: str, data: dict[str, Any]) -> str:
    match kind:
        case "data.published":
            return f"{data['dataset']} v{data['version']}, {data['rows']:,} rows"
        case "model.trained":
            return (
                f"run {data['run_id'][:8]}: {data['estimator_class']} on {data['dataset']} v{data['dataset_version']}"
                f" ({data['trigger']})"
            )
        case "model.rejected":
            return "rejected: " + "; ".join(data["reasons"])
        case "model.registered":
            waiting = ", waits for an approver" if data["requires_approval"] else ""
            return f"v{data['version']} registered{waiting}"
        case "model.promoted":
            return f"v{data['version']} is {data.get('alias', 'production')} ({data['reason']})"
        case "model.rollout":
            moved = f"v{data['version']}" if data["version"] is not None else "cleared"
            return f"{data['alias']}: {moved} ({data['reason']})"
        case "model.served":
            if data["loaded"]:
                return f"{data['instance']} serves v{data['version']} as {data['alias']}"
            return f"{data['instance']} failed to load v{data['version']}: {data.get('error')}"
        case "predictions.logged":
            return f"{len(data['records'])} predictions of v{data['version']}"
        case "feedback.received":
            return f"{len(data['records'])} labels"
        case "drift.detected":
            return f"{data.get('cause') or 'drift'} on v{data['version']}: {data['action']}"
        case "spec.changed":
            return f"spec v{data['spec_version']}"
        case "training.failed":
            return f"run {data['run_id'][:8]} failed ({data['failure']}): {data['error']}"
    return ""
