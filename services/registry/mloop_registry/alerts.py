"""Alerts to people: which events make which alert, how severe, who gets it, and what they receive.

Pure logic (no I/O): the delivery worker (``alert_delivery``) sends what this module decides. An alert's
id is derived from the event that caused it, so a redelivered event can only ever make the same alert:
receivers use it as an idempotency key (delivery is at-least-once).
"""

from __future__ import annotations

import fnmatch
import hashlib
import hmac
import ipaddress
import json
import uuid
from datetime import datetime
from email.message import EmailMessage
from email.utils import format_datetime
from typing import Annotated, Any, Literal
from urllib.parse import quote, urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from mloop_common.events import DriftDetected, Envelope, ModelRejected, ModelServed, TrainingFailed

Severity = Literal["info", "warning", "critical"]
SEVERITY_RANK: dict[str, int] = {"info": 0, "warning": 1, "critical": 2}
# Alert ids are uuid5(this, event id): one event makes at most one alert, whichever process handles it.
ALERT_NAMESPACE = uuid.UUID("6f1d7c8e-4b9a-5e21-9d3c-2a7f0e5b8c41")
SIGNATURE_HEADER = "X-Mloop-Signature"
ALERT_ID_HEADER = "X-Mloop-Alert-Id"


# --- settings ----------------------------------------------------------------------------


class _Channel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
    min_severity: Severity = "info"
    models: list[str] = ["*"]  # glob patterns (fnmatch) on the model name
    timeout_seconds: float = Field(10.0, gt=0, le=300)


class WebhookChannel(_Channel):
    """POST the alert as JSON to ``url``, signed with ``secret`` (HMAC-SHA256 of the body)."""

    kind: Literal["webhook"]
    url: str
    secret: SecretStr
    # Targets on loopback, link-local, private or reserved addresses are refused unless this is set.
    allow_private: bool = False

    @field_validator("url")
    @classmethod
    def _http_only(cls, url: str) -> str:
        check_url(url)
        return url


class EmailChannel(_Channel):
    """Send the alert by SMTP to ``recipients``."""

    kind: Literal["email"]
    smtp_host: str
    smtp_port: int = Field(25, ge=1, le=65535)
    starttls: bool = False
    ssl: bool = False  # SMTP over TLS from the first byte (port 465), instead of STARTTLS
    username: str | None = None
    password: SecretStr | None = None
    sender: str
    recipients: list[str] = Field(min_length=1)

    @model_validator(mode="after")
    def _one_tls(self) -> EmailChannel:
        if self.ssl and self.starttls:
            raise ValueError("choose ssl (TLS from the start) or starttls, not both")
        return self


Channel = Annotated[WebhookChannel | EmailChannel, Field(discriminator="kind")]


class AlertSettings(BaseModel):
    """``MLOOP_REGISTRY_ALERTS__*``; channels as JSON in ``MLOOP_REGISTRY_ALERTS__CHANNELS``."""

    channels: list[Channel] = []
    max_attempts: int = Field(8, ge=1, le=100)
    backoff_seconds: float = Field(2.0, gt=0)  # before the 2nd attempt; doubles after each failure
    max_backoff_seconds: float = Field(600.0, gt=0)
    poll_seconds: float = Field(5.0, gt=0)  # the worker also wakes as soon as this process writes a delivery
    # A consumer group starts at the topics' beginning: older events (history, or a backlog after a long
    # outage) are not worth waking someone for.
    max_event_age_seconds: float = Field(86400.0, gt=0)
    # Where people open the reports an alert links to (public base URLs of the services).
    trainer_url: str = "http://127.0.0.1:8002"
    validator_url: str = "http://127.0.0.1:8003"
    drift_url: str = "http://127.0.0.1:8006"
    registry_url: str | None = None  # default: MLOOP_REGISTRY_URL

    @field_validator("channels")
    @classmethod
    def _unique_names(cls, channels: list[WebhookChannel | EmailChannel]) -> list[WebhookChannel | EmailChannel]:
        names = [c.name for c in channels]
        if len(set(names)) != len(names):
            raise ValueError(f"alert channel names must be unique: {names}")
        return channels

    def channel(self, name: str) -> WebhookChannel | EmailChannel | None:
        return next((c for c in self.channels if c.name == name), None)


# --- alerts ------------------------------------------------------------------------------


class Alert(BaseModel):
    """What a person is told: also the webhook's JSON body."""

    model_config = ConfigDict(frozen=True)

    id: str
    type: str  # the event type that caused it
    severity: Severity
    model: str
    version: int | None
    summary: str
    details: dict[str, Any]
    link: str
    time: datetime


class Links(BaseModel):
    trainer_url: str = "http://127.0.0.1:8002"
    validator_url: str
    drift_url: str
    registry_url: str


def alert_id(event: Envelope) -> str:
    return str(uuid.uuid5(ALERT_NAMESPACE, event.id))


def drift_severity(cause: str | None, action: str) -> Severity:
    """Broken input blocks retraining (critical); drift a person must judge (investigate) is a warning;
    a retrain the loop starts by itself is news (info). The Prometheus rules use the same levels."""
    if cause == "data_quality":
        return "critical"
    return "warning" if action == "investigate" else "info"


def alert_for(event: Envelope, links: Links) -> Alert | None:
    """The alert ``event`` makes, or None (an event that needs nobody: a model served as asked)."""
    base = {"id": alert_id(event), "type": event.type, "time": event.time}
    if event.type == "model.rejected":
        rejected = event.decode(ModelRejected)
        return Alert(
            **base,
            severity="warning",
            model=rejected.model,
            version=None,  # a rejected candidate never became a version
            summary=f"{rejected.model}: candidate of run {rejected.run_id} rejected: " + "; ".join(rejected.reasons),
            details={
                "run_id": rejected.run_id,
                "evaluation_id": rejected.evaluation_id,
                "failed_checks": rejected.reasons,
                "candidate_metrics": rejected.candidate_metrics,
                "champion_version": rejected.champion_version,
                "champion_metrics": rejected.champion_metrics,
            },
            link=f"{links.validator_url.rstrip('/')}/v1/evaluations/{quote(rejected.evaluation_id)}/report.html",
        )
    if event.type == "drift.detected":
        drift = event.decode(DriftDetected)
        return Alert(
            **base,
            severity=drift_severity(drift.cause, drift.action),
            model=drift.model,
            version=drift.version,
            summary=f"{drift.model} v{drift.version}: {drift.cause or 'drift'} ({drift.action}): {drift.summary}",
            details={
                "cause": drift.cause,
                "action": drift.action,
                "drifted_features": drift.drifted_features,
                "report_id": drift.report_id,
                "window_size": drift.window_size,
            },
            link=f"{links.drift_url.rstrip('/')}/v1/drift/{quote(drift.model)}/reports/{quote(drift.report_id)}",
        )
    if event.type == "model.served":
        served = event.decode(ModelServed)
        if served.loaded:
            return None
        now = f"serves v{served.serving_version}" if served.serving_version is not None else "serves nothing"
        return Alert(
            **base,
            severity="critical",
            model=served.model,
            version=served.version,
            summary=(
                f"{served.model}: serving instance {served.instance} failed to load {served.alias} "
                f"v{served.version} ({served.error or 'no reason given'}); it {now} under {served.alias}"
            ),
            details={
                "instance": served.instance,
                "alias": served.alias,
                "error": served.error,
                "serving_version": served.serving_version,
            },
            link=f"{links.registry_url.rstrip('/')}/v1/models/{quote(served.model)}",
        )
    if event.type == "training.failed":
        failed = event.decode(TrainingFailed)
        return Alert(
            **base,
            # A model that cannot be trained on new data goes stale; its production version still serves.
            severity="warning",
            model=failed.model,
            version=None,
            summary=(
                f"{failed.model}: training run {failed.run_id} on {failed.dataset} v{failed.dataset_version} "
                f"failed ({failed.failure}): {failed.error}"
            ),
            details={
                "run_id": failed.run_id,
                "failure": failed.failure,
                "error": failed.error,
                "trigger": failed.trigger,
                "spec_version": failed.spec_version,
                "dataset": failed.dataset,
                "dataset_version": failed.dataset_version,
            },
            link=f"{links.trainer_url.rstrip('/')}/v1/runs/{quote(failed.run_id)}",
        )
    return None


def routes(alert: Alert, channels: list[WebhookChannel | EmailChannel]) -> list[WebhookChannel | EmailChannel]:
    """The channels that take ``alert``: severe enough for the channel, and a model it watches."""
    return [
        c
        for c in channels
        if SEVERITY_RANK[alert.severity] >= SEVERITY_RANK[c.min_severity]
        and any(fnmatch.fnmatchcase(alert.model, pattern) for pattern in c.models)
    ]


def backoff_seconds(failed_attempts: int, settings: AlertSettings) -> float:
    """Wait before the next attempt after ``failed_attempts`` failures: doubling, capped."""
    return float(min(settings.max_backoff_seconds, settings.backoff_seconds * 2 ** max(failed_attempts - 1, 0)))


# --- what is sent ------------------------------------------------------------------------


def webhook_body(alert: Alert) -> bytes:
    """The webhook's JSON body, in the exact bytes that are signed and sent."""
    return json.dumps(alert.model_dump(mode="json"), sort_keys=True, separators=(",", ":")).encode()


def sign(body: bytes, secret: str) -> str:
    """The value of ``X-Mloop-Signature``: ``sha256=`` and the hex HMAC-SHA256 of the body."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify(body: bytes, secret: str, signature: str) -> bool:
    """What a receiver does: recompute the signature of the raw body and compare in constant time."""
    return hmac.compare_digest(sign(body, secret), signature)


def webhook_headers(alert: Alert, body: bytes, secret: str) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "User-Agent": "mloop-alerts",
        SIGNATURE_HEADER: sign(body, secret),
        ALERT_ID_HEADER: alert.id,
    }


def email_message(alert: Alert, channel: EmailChannel) -> EmailMessage:
    """The e-mail for ``alert``; its Message-ID carries the alert id, so a resent copy is recognisable."""
    message = EmailMessage()
    message["From"] = channel.sender
    message["To"] = ", ".join(channel.recipients)
    message["Subject"] = f"[mloop {alert.severity}] {alert.summary}"[:200]
    message["Date"] = format_datetime(alert.time)
    message["Message-ID"] = f"<{alert.id}@mloop.alerts>"
    message[ALERT_ID_HEADER] = alert.id
    lines = [
        alert.summary,
        "",
        f"Severity: {alert.severity}",
        f"Model: {alert.model}" + (f" v{alert.version}" if alert.version is not None else ""),
        f"Event: {alert.type} at {alert.time.isoformat()}",
        f"Report: {alert.link}",
        "",
        *(f"{key}: {json.dumps(value, default=str)}" for key, value in alert.details.items()),
        "",
        f"Alert id: {alert.id}",
    ]
    message.set_content("\n".join(lines) + "\n")
    return message


# --- SSRF rules for webhook targets ------------------------------------------------------


class RefusedTarget(ValueError):
    """A webhook URL mloop will not call."""


def check_url(url: str) -> tuple[str, int]:
    """The host and port of an http(s) URL; RefusedTarget for any other scheme or a URL without a host."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise RefusedTarget(f"webhook URL {url!r}: only http and https are allowed")
    if not parts.hostname:
        raise RefusedTarget(f"webhook URL {url!r} has no host")
    try:
        port = parts.port
    except ValueError as exc:
        raise RefusedTarget(f"webhook URL {url!r}: {exc}") from exc
    return parts.hostname, port or (443 if parts.scheme == "https" else 80)


def forbidden(address: str) -> str | None:
    """Why a webhook may not go to IP ``address`` without ``allow_private`` (None: a public address)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # drop an IPv6 zone
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # ::ffff:127.0.0.1 is loopback
    for kind in ("loopback", "link_local", "private", "multicast", "unspecified", "reserved"):
        if getattr(ip, f"is_{kind}"):
            return f"{ip} is a {kind.replace('_', '-')} address"
    if not ip.is_global:  # e.g. 100.64.0.0/10 (carrier-grade NAT), documentation ranges
        return f"{ip} is not a public address"
    return None


def refuse_addresses(host: str, addresses: list[str], *, allow_private: bool) -> None:
    """RefusedTarget when ``host`` resolved to nothing, or (unless allowed) to any non-public address."""
    if not addresses:
        raise RefusedTarget(f"webhook host {host!r} resolved to no address")
    if allow_private:
        return
    reasons = [reason for address in addresses if (reason := forbidden(address))]
    if reasons:
        raise RefusedTarget(f"webhook host {host!r}: {reasons[0]} (set allow_private on the channel to allow it)")


class Delivery(BaseModel):
    """One alert to one channel: a row of ``alert_deliveries`` (the alerts' outbox)."""

    id: int
    alert: Alert
    channel: str
    attempts: int = 0
    next_attempt_at: datetime
    last_error: str | None = None
    delivered_at: datetime | None = None
    failed_at: datetime | None = None
    created_at: datetime
