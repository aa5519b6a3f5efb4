"""Alerts to people on the real stack: a model rejected by the release gate reaches a webhook (retried after a
500, signed) and an SMTP server, drift in a served model's traffic does too (linking drift's report), and an
alert waiting for a receiver survives a SIGKILL of the registry."""

from __future__ import annotations

import email
import email.policy
import json
import socket
import threading
import uuid
from collections.abc import Iterator
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import numpy as np
import pytest
from aiosmtpd.controller import Controller

from mloop_registry.alerts import drift_severity, verify
from tests.conftest import REPO, eventually, running
from tests.e2e.test_release_gate import declare, publish, served_version, spec
from tests.stack import ServiceStack

pytestmark = pytest.mark.asyncio(loop_scope="module")
SECRET = "webhook-secret-for-tests"
TIMEOUT = 180


class Webhook:
    """A local webhook receiver: answers each POST with the next queued status (200 when none is queued)."""

    def __init__(self) -> None:
        self.statuses: list[int] = []
        self.received: list[tuple[int, dict[str, str], bytes]] = []  # (status answered, headers, body)
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with receiver.lock:
                    status = receiver.statuses.pop(0) if receiver.statuses else 200
                    receiver.received.append((status, dict(self.headers.items()), body))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/mloop"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def fail_next(self, *statuses: int) -> None:
        with self.lock:
            self.statuses.extend(statuses)

    def for_model(self, model: str) -> list[tuple[int, dict[str, str], bytes]]:
        with self.lock:
            return [r for r in self.received if json.loads(r[2])["model"] == model]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Mailbox:
    """aiosmtpd's handler: keeps every message it accepts."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        self.port = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        self.messages.append(message)
        return "250 Message accepted for delivery"

    def for_model(self, model: str) -> list[EmailMessage]:
        return [m for m in self.messages if model in str(m["Subject"])]


@pytest.fixture(scope="module")
def webhook() -> Iterator[Webhook]:
    receiver = Webhook()
    yield receiver
    receiver.close()


@pytest.fixture(scope="module")
def mailbox() -> Iterator[Mailbox]:
    box = Mailbox()
    with socket.socket() as probe:  # a free port (aiosmtpd checks readiness by connecting, so not 0)
        probe.bind(("127.0.0.1", 0))
        box.port = probe.getsockname()[1]
    controller = Controller(box, hostname="127.0.0.1", port=box.port)
    controller.start()
    yield box
    controller.stop()


@pytest.fixture(scope="module")
def stack(
    kafka_bootstrap: str, postgres: str, tmp_path_factory: pytest.TempPathFactory, webhook: Webhook, mailbox: Mailbox
) -> Iterator[ServiceStack]:
    """All six services; the registry alerts a local webhook and a local SMTP server, retrying quickly."""
    services = ServiceStack(
        bootstrap=kafka_bootstrap, database_url=postgres, root=tmp_path_factory.mktemp("stack"), repo=REPO
    )
    channels = [
        # The receiver is on loopback: the SSRF rules refuse that unless the channel allows it.
        {"name": "ops-hook", "kind": "webhook", "url": webhook.url, "secret": SECRET, "allow_private": True},
        {
            "name": "ops-mail",
            "kind": "email",
            "smtp_host": "127.0.0.1",
            "smtp_port": mailbox.port,
            "sender": "mloop@example.org",
            "recipients": ["oncall@example.org"],
            "min_severity": "warning",
        },
    ]
    services.env.update(
        {
            "MLOOP_REGISTRY_ALERTS__CHANNELS": json.dumps(channels),
            "MLOOP_REGISTRY_ALERTS__BACKOFF_SECONDS": "0.5",
            "MLOOP_REGISTRY_ALERTS__MAX_BACKOFF_SECONDS": "2",
            "MLOOP_REGISTRY_ALERTS__POLL_SECONDS": "0.5",
            "MLOOP_REGISTRY_ALERTS__MAX_ATTEMPTS": "100",
            "MLOOP_REGISTRY_ALERTS__TRAINER_URL": services.urls["trainer"],
            "MLOOP_REGISTRY_ALERTS__VALIDATOR_URL": services.urls["validator"],
            "MLOOP_REGISTRY_ALERTS__DRIFT_URL": services.urls["drift"],
        }
    )
    with running(services):
        yield services


def delivered(webhook: Webhook, model: str) -> list[tuple[int, dict[str, str], bytes]]:
    return [r for r in webhook.for_model(model) if r[0] == 200]


async def alerts_counted(registry: httpx.AsyncClient, channel: str, outcome: str) -> float:
    wanted = f'channel="{channel}"'
    for line in (await registry.get("/metrics")).text.splitlines():
        if line.startswith("mloop_alerts_total{") and wanted in line and f'outcome="{outcome}"' in line:
            if 'severity="warning"' in line:
                return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_a_rejected_model_alerts_the_webhook_after_a_failed_attempt_and_by_email(
    stack: ServiceStack, clients: dict[str, httpx.AsyncClient], webhook: Webhook, mailbox: Mailbox
) -> None:
    name = f"alert-reject-{uuid.uuid4().hex[:6]}"
    await declare(clients["registry"], spec(name, floors={"accuracy": 0.999}))  # beyond any model of this data
    webhook.fail_next(500)

    await publish(clients["ingest"], name, seed=1)

    [(_, headers, body)] = await eventually(lambda: delivered(webhook, name), timeout=TIMEOUT, interval=0.5)
    attempts = webhook.for_model(name)
    assert [status for status, _, _ in attempts] == [500, 200]  # the first attempt failed, the retry arrived
    assert attempts[0][2] == body and attempts[0][1]["X-Mloop-Alert-Id"] == headers["X-Mloop-Alert-Id"]
    assert verify(body, SECRET, headers["X-Mloop-Signature"])
    assert not verify(body, "another-secret", headers["X-Mloop-Signature"])
    alert = json.loads(body)
    assert alert["id"] == headers["X-Mloop-Alert-Id"]
    assert (alert["type"], alert["severity"], alert["model"], alert["version"]) == (
        "model.rejected",
        "warning",
        name,
        None,
    )
    assert any("accuracy" in check and "0.9990" in check for check in alert["details"]["failed_checks"])
    assert alert["link"].startswith(stack.urls["validator"]) and alert["link"].endswith("/report.html")
    report = await clients["validator"].get(alert["link"].removeprefix(stack.urls["validator"]))
    assert report.status_code == 200 and "rejected" in report.text.lower()

    [message] = await eventually(lambda: mailbox.for_model(name), timeout=TIMEOUT, interval=0.5)
    assert message["To"] == "oncall@example.org" and message["From"] == "mloop@example.org"
    assert message["Subject"].startswith(f"[mloop warning] {name}")
    assert message["Message-ID"] == f"<{alert['id']}@mloop.alerts>"
    assert alert["link"] in message.get_content()

    assert await alerts_counted(clients["registry"], "ops-hook", "delivered") >= 1
    assert await alerts_counted(clients["registry"], "ops-mail", "delivered") >= 1


async def test_drift_in_served_traffic_alerts_the_webhook_and_the_mailbox_with_a_link_to_the_drift_report(
    stack: ServiceStack, clients: dict[str, httpx.AsyncClient], webhook: Webhook, mailbox: Mailbox
) -> None:
    name = f"alert-drift-{uuid.uuid4().hex[:6]}"
    window = 50  # the smallest window a spec may ask for: one request fills it
    declared = spec(name)
    declared["drift"] = {"window": window}
    await declare(clients["registry"], declared)
    await publish(clients["ingest"], name, seed=4)
    # Trained, validated, registered, promoted and loaded (this probe is the window's first prediction).
    assert await eventually(lambda: served_version(clients["serving"], name), timeout=TIMEOUT, interval=0.5) == 1

    # Production traffic where x3 moved four standard deviations; the label does not depend on x3, so the
    # model's confidence holds: a covariate shift for a person to look at, not a retrain.
    rng = np.random.default_rng(44)
    x = rng.normal(size=(window, 3)) + [0.0, 0.0, 4.0]
    instances = [{"x1": a, "x2": b, "x3": c} for a, b, c in x.tolist()]
    response = await clients["serving"].post(f"/v1/models/{name}:predict", json={"instances": instances})
    assert response.status_code == 200, response.text

    [(_, headers, body)] = await eventually(lambda: delivered(webhook, name), timeout=TIMEOUT, interval=0.5)
    assert verify(body, SECRET, headers["X-Mloop-Signature"])
    assert not verify(body, "another-secret", headers["X-Mloop-Signature"])
    alert = json.loads(body)
    assert alert["id"] == headers["X-Mloop-Alert-Id"]
    assert (alert["type"], alert["model"], alert["version"]) == ("drift.detected", name, 1)
    details = alert["details"]
    assert details["window_size"] == window and "x3" in details["drifted_features"]

    # The alert says what drift's own report on that window says, and links to it.
    report_path = f"/v1/drift/{name}/reports/{details['report_id']}"
    assert alert["link"] == stack.urls["drift"] + report_path
    report = (await clients["drift"].get(report_path)).json()
    assert (report["model"], report["version"], report["emitted"]) == (name, 1, True)
    assert (details["cause"], details["action"]) == (report["cause"], report["action"])
    assert (report["cause"], report["action"]) == ("covariate_shift", "investigate")
    assert alert["severity"] == drift_severity(report["cause"], report["action"]) == "warning"
    assert details["drifted_features"] == report["report"]["drifted_features"]

    [message] = await eventually(lambda: mailbox.for_model(name), timeout=TIMEOUT, interval=0.5)
    assert message["To"] == "oncall@example.org" and message["From"] == "mloop@example.org"
    assert message["Subject"].startswith(f"[mloop warning] {name} v1: covariate_shift (investigate)")
    assert message["Message-ID"] == f"<{alert['id']}@mloop.alerts>"
    assert alert["link"] in message.get_content()
    # One window, one alarm: the webhook got this alert once (no failed attempt was asked for).
    assert [status for status, _, _ in webhook.for_model(name)] == [200]


async def test_an_alert_waiting_for_its_receiver_survives_a_kill_of_the_registry(
    stack: ServiceStack, clients: dict[str, httpx.AsyncClient], webhook: Webhook
) -> None:
    name = f"alert-restart-{uuid.uuid4().hex[:6]}"
    await declare(clients["registry"], spec(name, floors={"accuracy": 0.999}))
    webhook.fail_next(*[503] * 1000)  # the receiver is down

    await publish(clients["ingest"], name, seed=2)
    await eventually(lambda: webhook.for_model(name), timeout=TIMEOUT, interval=0.5)  # tried and refused
    stack.kill("registry")
    with webhook.lock:
        webhook.statuses.clear()  # the receiver is back, while the registry is not
    refused = len(webhook.for_model(name))
    stack.start("registry")

    [(_, headers, body)] = await eventually(lambda: delivered(webhook, name), timeout=TIMEOUT, interval=0.5)
    assert verify(body, SECRET, headers["X-Mloop-Signature"])
    # Every attempt carried the same alert; only the last was accepted, and nothing came after it.
    attempts = webhook.for_model(name)
    assert len(attempts) > refused and {a[1]["X-Mloop-Alert-Id"] for a in attempts} == {headers["X-Mloop-Alert-Id"]}
    assert [status for status, _, _ in attempts].count(200) == 1


async def test_a_training_run_that_cannot_succeed_alerts_with_its_reason_and_a_link_to_the_run(
    stack: ServiceStack, clients: dict[str, httpx.AsyncClient], webhook: Webhook
) -> None:
    name = f"alert-failed-{uuid.uuid4().hex[:6]}"
    broken = spec(name)
    broken["features"] = ["x1", "x2", "not_in_the_data"]  # the data lacks it: no run of this spec can succeed
    await declare(clients["registry"], broken)

    await publish(clients["ingest"], name, seed=3)

    [(_, headers, body)] = await eventually(lambda: delivered(webhook, name), timeout=TIMEOUT, interval=0.5)
    alert = json.loads(body)
    assert verify(body, SECRET, headers["X-Mloop-Signature"])
    assert (alert["type"], alert["severity"], alert["details"]["failure"]) == ("training.failed", "warning", "data")
    assert "not_in_the_data" in alert["details"]["error"]
    run = await clients["trainer"].get(alert["link"].removeprefix(stack.urls["trainer"]))
    assert run.status_code == 200 and run.json()["status"] == "failed"
