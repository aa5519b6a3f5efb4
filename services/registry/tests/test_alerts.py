"""Alerts' pure logic: which events alert whom, how severe, what is sent, how it is signed, where it may go."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from mloop_common.events import DriftDetected, Envelope, ModelRejected, ModelServed, TrainingFailed, new_event
from mloop_common.testing import through_the_wire
from mloop_registry.alerts import (
    Alert,
    AlertSettings,
    EmailChannel,
    Links,
    RefusedTarget,
    WebhookChannel,
    alert_for,
    alert_id,
    backoff_seconds,
    check_url,
    drift_severity,
    email_message,
    forbidden,
    refuse_addresses,
    routes,
    sign,
    verify,
    webhook_body,
    webhook_headers,
)
from mloop_registry.config import RegistrySettings

LINKS = Links(
    trainer_url="https://trainer.example",
    validator_url="https://validator.example/",
    drift_url="https://drift.example",
    registry_url="https://reg",
)


def rejected(model: str = "churn") -> Envelope:
    payload = ModelRejected(
        model=model,
        run_id="run-7",
        evaluation_id="ev-1",
        reasons=["floor.accuracy: 0.8123 < 0.9990"],
        candidate_metrics={"accuracy": 0.8123},
        champion_version=3,
        champion_metrics={"accuracy": 0.85},
    )
    return through_the_wire(new_event(payload, source="mloop/validator", subject=model))


def drift(cause: str | None, action: str) -> Envelope:
    payload = DriftDetected(
        model="churn",
        version=4,
        report_id="r-9",
        cause=cause,
        action=action,  # type: ignore[arg-type]
        summary="age drifted",
        drifted_features=["age"],
        evidence={},
        window_size=1000,
    )
    return through_the_wire(new_event(payload, source="mloop/drift", subject="churn"))


def served(loaded: bool) -> Envelope:
    payload = ModelServed(
        model="churn",
        alias="production",
        version=5,
        instance="serving-a",
        loaded=loaded,
        error=None if loaded else "artifact digest mismatch",
        serving_version=4 if not loaded else 5,
    )
    return through_the_wire(new_event(payload, source="mloop/serving", subject="churn"))


def webhook(**fields: Any) -> WebhookChannel:
    return WebhookChannel.model_validate(
        {"name": "hook", "kind": "webhook", "url": "https://hooks.example/x", "secret": "s3cret", **fields}
    )


def email(**fields: Any) -> EmailChannel:
    return EmailChannel.model_validate(
        {
            "name": "mail",
            "kind": "email",
            "smtp_host": "smtp.example",
            "sender": "mloop@example.org",
            "recipients": ["oncall@example.org", "ds@example.org"],
            **fields,
        }
    )


def test_a_rejection_is_a_warning_naming_the_failed_checks_and_linking_the_evaluation_report():
    event = rejected()
    alert = alert_for(event, LINKS)
    assert alert is not None
    assert (alert.type, alert.severity, alert.model, alert.version) == ("model.rejected", "warning", "churn", None)
    assert "floor.accuracy: 0.8123 < 0.9990" in alert.summary and "run-7" in alert.summary
    assert alert.details["failed_checks"] == ["floor.accuracy: 0.8123 < 0.9990"]
    assert alert.details["champion_version"] == 3
    assert alert.link == "https://validator.example/v1/evaluations/ev-1/report.html"
    assert alert.time == event.time


@pytest.mark.parametrize(
    ("cause", "action", "severity"),
    [
        ("data_quality", "investigate", "critical"),
        ("covariate_shift", "investigate", "warning"),
        ("concept_drift", "retrain", "info"),
        ("performance_drop", "retrain", "info"),
        (None, "investigate", "warning"),
    ],
)
def test_drift_is_as_severe_as_its_cause_and_action_and_links_its_report(cause, action, severity):
    alert = alert_for(drift(cause, action), LINKS)
    assert alert is not None and alert.severity == severity == drift_severity(cause, action)
    assert alert.version == 4 and alert.details["cause"] == cause and alert.details["action"] == action
    assert alert.link == "https://drift.example/v1/drift/churn/reports/r-9"
    assert "age drifted" in alert.summary


def test_a_failed_load_is_critical_and_a_successful_one_alerts_nobody():
    assert alert_for(served(loaded=True), LINKS) is None
    alert = alert_for(served(loaded=False), LINKS)
    assert alert is not None and alert.severity == "critical" and alert.version == 5
    assert "failed to load production v5" in alert.summary and "artifact digest mismatch" in alert.summary
    assert "serves v4" in alert.summary
    assert alert.link == "https://reg/v1/models/churn"


def test_a_failed_training_run_is_a_warning_with_its_reason_linking_the_run():
    failed = TrainingFailed(
        model="churn",
        run_id="run-7",
        failure="over_budget",
        error="the run needed more memory than its budget of 2048 MB",
        trigger="data.published",
        spec_version=2,
        dataset="churn",
        dataset_version=9,
    )

    alert = alert_for(through_the_wire(new_event(failed, source="mloop/trainer", subject="churn")), LINKS)

    assert alert is not None and (alert.severity, alert.version, alert.type) == ("warning", None, "training.failed")
    assert "churn v9 failed (over_budget)" in alert.summary and "2048 MB" in alert.summary
    assert alert.details["run_id"] == "run-7" and alert.link == "https://trainer.example/v1/runs/run-7"


def test_other_events_make_no_alert():
    event = Envelope(type="model.registered", source="x", subject="churn", data={})
    assert alert_for(event, LINKS) is None


def test_one_event_makes_one_alert_id_however_often_it_is_handled():
    event = rejected()
    first, again = alert_for(event, LINKS), alert_for(through_the_wire(event), LINKS)
    assert first is not None and again is not None
    assert first.id == again.id == alert_id(event)
    assert first.id != alert_id(rejected())


def test_routing_by_severity_and_model_globs():
    alert = alert_for(rejected("churn-eu"), LINKS)  # a warning
    assert alert is not None
    everything = webhook(name="all")
    critical_only = webhook(name="pager", min_severity="critical")
    eu_models = email(name="eu", models=["*-eu", "fraud"])
    us_models = email(name="us", models=["*-us"])
    chosen = routes(alert, [everything, critical_only, eu_models, us_models])
    assert [c.name for c in chosen] == ["all", "eu"]
    assert routes(alert, []) == []


def test_the_signature_is_the_hmac_of_the_exact_body_and_verifies_only_with_the_secret():
    alert = alert_for(rejected(), LINKS)
    assert alert is not None
    body = webhook_body(alert)
    headers = webhook_headers(alert, body, "s3cret")
    assert headers["X-Mloop-Alert-Id"] == alert.id
    assert headers["X-Mloop-Signature"] == sign(body, "s3cret")
    # The well-known HMAC-SHA256 example vector: any HMAC tool checks the same way.
    fox = b"The quick brown fox jumps over the lazy dog"
    assert sign(fox, "key") == "sha256=f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8"
    assert verify(body, "s3cret", headers["X-Mloop-Signature"])
    assert not verify(body, "other", headers["X-Mloop-Signature"])
    assert not verify(body + b" ", "s3cret", headers["X-Mloop-Signature"])
    sent = json.loads(body)
    assert set(sent) == {"id", "type", "severity", "model", "version", "summary", "details", "link", "time"}
    assert Alert.model_validate(sent) == alert


def test_the_email_has_the_link_the_recipients_and_the_alert_id_as_message_id():
    alert = alert_for(drift("data_quality", "investigate"), LINKS)
    assert alert is not None
    message = email_message(alert, email())
    assert message["To"] == "oncall@example.org, ds@example.org" and message["From"] == "mloop@example.org"
    assert message["Subject"].startswith("[mloop critical] churn v4: data_quality")
    assert message["Message-ID"] == f"<{alert.id}@mloop.alerts>" and message["X-Mloop-Alert-Id"] == alert.id
    body = message.get_content()
    assert "https://drift.example/v1/drift/churn/reports/r-9" in body and alert.id in body


def test_backoff_doubles_up_to_its_cap():
    settings = AlertSettings(backoff_seconds=2, max_backoff_seconds=20)
    assert [backoff_seconds(n, settings) for n in range(1, 7)] == [2, 4, 8, 16, 20, 20]


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "127.8.9.10",
        "::1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",  # cloud metadata
        "fe80::1",
        "fc00::1",
        "0.0.0.0",
        "::",
        "::ffff:127.0.0.1",
        "100.64.0.1",
        "224.0.0.1",
        "240.0.0.1",
    ],
)
def test_non_public_addresses_are_refused(address):
    assert forbidden(address) is not None
    with pytest.raises(RefusedTarget, match="allow_private"):
        refuse_addresses("h", [address], allow_private=False)
    refuse_addresses("h", [address], allow_private=True)


@pytest.mark.parametrize("address", ["93.184.215.14", "1.1.1.1", "2606:4700:4700::1111"])
def test_public_addresses_pass(address):
    assert forbidden(address) is None
    refuse_addresses("h", [address], allow_private=False)


def test_a_name_is_refused_if_any_of_its_addresses_is_private_or_it_has_none():
    with pytest.raises(RefusedTarget, match="10.0.0.5"):
        refuse_addresses("mixed.example", ["1.1.1.1", "10.0.0.5"], allow_private=False)
    with pytest.raises(RefusedTarget, match="no address"):
        refuse_addresses("nothing.example", [], allow_private=True)


@pytest.mark.parametrize(
    "url", ["ftp://x/y", "file:///etc/passwd", "gopher://h/", "http:///nohost", "https://h:99999/"]
)
def test_only_http_urls_with_a_host_are_webhooks(url):
    with pytest.raises(RefusedTarget):
        check_url(url)
    with pytest.raises(ValidationError):
        webhook(url=url)


def test_urls_give_their_host_and_port():
    assert check_url("https://hooks.example/x") == ("hooks.example", 443)
    assert check_url("http://[::1]:8080/x") == ("::1", 8080)


def test_channels_come_from_the_environment_as_json_with_secrets_hidden(monkeypatch):
    channels = [
        {"name": "hook", "kind": "webhook", "url": "https://h.example/", "secret": "s3cret", "min_severity": "warning"},
        {
            "name": "mail",
            "kind": "email",
            "smtp_host": "smtp.example",
            "smtp_port": 587,
            "starttls": True,
            "username": "u",
            "password": "p4ss",
            "sender": "a@example.org",
            "recipients": ["b@example.org"],
            "models": ["churn*"],
        },
    ]
    monkeypatch.setenv("MLOOP_REGISTRY_ALERTS__CHANNELS", json.dumps(channels))
    monkeypatch.setenv("MLOOP_REGISTRY_ALERTS__MAX_ATTEMPTS", "3")
    settings = RegistrySettings().alerts
    hook, mail = settings.channels
    assert isinstance(hook, WebhookChannel) and isinstance(mail, EmailChannel)
    assert hook.secret.get_secret_value() == "s3cret" and "s3cret" not in repr(settings)
    assert mail.password is not None and "p4ss" not in repr(settings) and mail.models == ["churn*"]
    assert settings.max_attempts == 3 and settings.channel("mail") is mail


def test_channel_names_are_unique_and_a_webhook_needs_a_secret():
    with pytest.raises(ValidationError, match="unique"):
        AlertSettings.model_validate({"channels": [webhook().model_dump(), webhook().model_dump()]})
    with pytest.raises(ValidationError, match="secret"):
        WebhookChannel.model_validate({"name": "h", "kind": "webhook", "url": "https://h/"})
    with pytest.raises(ValidationError, match="starttls"):
        email(ssl=True, starttls=True)
