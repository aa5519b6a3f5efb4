"""Alerts to people, the moving parts: the event handler that writes deliveries, and the worker that sends them.

Delivery is at-least-once. The handler writes one ``alert_deliveries`` row per (alert, channel) in the
transaction that claims the event in the inbox, so an alert exists if and only if its event was handled.
The worker takes due rows (under a lease, so replicas do not send the same row at once), sends each, and
records the outcome: delivered, retried after a doubling backoff, or given up after ``max_attempts``.
A crash between a send and its record sends again after the lease: receivers de-duplicate on the alert id
(``X-Mloop-Alert-Id``, the e-mail's Message-ID).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import smtplib
import socket
import ssl
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import httpx
from prometheus_client import Counter

from mloop_common.events import Envelope, Payload
from mloop_common.uow import Store
from mloop_registry.alerts import (
    Alert,
    AlertSettings,
    Delivery,
    EmailChannel,
    Links,
    RefusedTarget,
    WebhookChannel,
    alert_for,
    backoff_seconds,
    check_url,
    email_message,
    refuse_addresses,
    routes,
    webhook_body,
    webhook_headers,
)
from mloop_registry.store import RegistryUnit

log = logging.getLogger(__name__)

ALERTS = Counter(
    "mloop_alerts_total",
    "Alert deliveries finished, by channel, severity and outcome (delivered, failed: given up)",
    ["channel", "severity", "outcome"],
)
ATTEMPT_FAILURES = Counter(
    "mloop_alert_attempt_failures_total",
    "Failed delivery attempts of alerts (each retried until given up)",
    ["channel"],
)
BATCH = 20  # deliveries taken per round
Resolver = Callable[[str, int], Awaitable[list[str]]]


class DeliveryError(Exception):
    """An attempt failed; ``permanent`` ones are not retried (a target the settings forbid)."""

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


# --- the handler -------------------------------------------------------------------------


class AlertWriter:
    """Consumes model.rejected, drift.detected, model.served and training.failed; writes the deliveries of alerts."""

    def __init__(
        self, *, store: Store[RegistryUnit], settings: AlertSettings, registry_url: str, on_written: Callable[[], None]
    ) -> None:
        self.store = store
        self.settings = settings
        self.links = Links(
            trainer_url=settings.trainer_url,
            validator_url=settings.validator_url,
            drift_url=settings.drift_url,
            registry_url=settings.registry_url or registry_url,
        )
        self.on_written = on_written

    async def on_event(self, payload: Payload, event: Envelope) -> None:
        alert = alert_for(event, self.links)
        if alert is None or not self.settings.channels:
            return
        age = datetime.now(UTC) - event.time
        if age > timedelta(seconds=self.settings.max_event_age_seconds):
            log.info("no alert for %s event %s: it is %s old", event.type, event.id, age)
            return
        channels = [c.name for c in routes(alert, self.settings.channels)]
        if not channels:
            return
        async with self.store.transaction() as unit:
            if not await unit.claim(event):
                return
            await unit.add_deliveries(alert, channels)
        self.on_written()


# --- senders -----------------------------------------------------------------------------


async def resolve(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to (a literal IP: itself)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return sorted({str(info[4][0]) for info in infos})


async def check_target(url: str, *, allow_private: bool, resolver: Resolver = resolve) -> None:
    """RefusedTarget unless ``url`` is http(s) and its host resolves only to public addresses (or private ones
    are allowed). Checked before every attempt: a name may point elsewhere since the last one."""
    host, port = check_url(url)
    try:
        addresses = await resolver(host, port)
    except OSError as exc:
        raise DeliveryError(f"cannot resolve {host!r}: {exc}") from exc
    refuse_addresses(host, addresses, allow_private=allow_private)


class Senders:
    """Sends one alert to one channel, or raises DeliveryError saying why not."""

    def __init__(self, *, resolver: Resolver = resolve) -> None:
        self.resolver = resolver
        # No redirects (a 3xx could point anywhere, the SSRF check covers the first URL only) and no proxies
        # from the environment (the check is about where the request really goes).
        self.client = httpx.AsyncClient(follow_redirects=False, trust_env=False)

    async def aclose(self) -> None:
        await self.client.aclose()

    async def send(self, alert: Alert, channel: WebhookChannel | EmailChannel) -> None:
        if isinstance(channel, WebhookChannel):
            await self.webhook(alert, channel)
        else:
            await self.email(alert, channel)

    async def webhook(self, alert: Alert, channel: WebhookChannel) -> None:
        try:
            await check_target(channel.url, allow_private=channel.allow_private, resolver=self.resolver)
        except RefusedTarget as exc:
            raise DeliveryError(str(exc), permanent=True) from exc
        body = webhook_body(alert)
        headers = webhook_headers(alert, body, channel.secret.get_secret_value())
        try:
            response = await self.client.post(
                channel.url, content=body, headers=headers, timeout=channel.timeout_seconds
            )
        except httpx.HTTPError as exc:
            raise DeliveryError(f"POST {channel.url}: {exc!r}") from exc
        if response.is_redirect:
            raise DeliveryError(
                f"HTTP {response.status_code}: redirect to {response.headers.get('location')!r} not followed"
            )
        if not response.is_success:
            raise DeliveryError(f"HTTP {response.status_code}: {response.text[:200]!r}")

    async def email(self, alert: Alert, channel: EmailChannel) -> None:
        try:
            await asyncio.to_thread(_send_mail, alert, channel)
        except (OSError, smtplib.SMTPException) as exc:
            raise DeliveryError(f"SMTP {channel.smtp_host}:{channel.smtp_port}: {exc!r}") from exc


def _send_mail(alert: Alert, channel: EmailChannel) -> None:
    message = email_message(alert, channel)
    context = ssl.create_default_context()
    smtp: smtplib.SMTP
    if channel.ssl:
        smtp = smtplib.SMTP_SSL(channel.smtp_host, channel.smtp_port, timeout=channel.timeout_seconds, context=context)
    else:
        smtp = smtplib.SMTP(channel.smtp_host, channel.smtp_port, timeout=channel.timeout_seconds)
    with smtp:
        if channel.starttls:
            smtp.starttls(context=context)
        if channel.username:
            smtp.login(channel.username, channel.password.get_secret_value() if channel.password else "")
        smtp.send_message(message)


# --- the worker --------------------------------------------------------------------------


class DeliveryWorker:
    """Sends due deliveries until stopped; ``wake()`` starts a round now instead of at the next poll."""

    def __init__(self, *, store: Store[RegistryUnit], settings: AlertSettings, senders: Senders) -> None:
        self.store = store
        self.settings = settings
        self.senders = senders
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def wake(self) -> None:
        self._wake.set()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="alert-delivery")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.senders.aclose()

    async def _run(self) -> None:
        while True:
            try:
                sent = await self.run_once()
            except Exception:
                log.exception("alert delivery round failed; trying again in %.0f s", self.settings.poll_seconds)
                sent = 0
            if sent:
                continue  # a full batch may have more behind it
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.settings.poll_seconds)
            self._wake.clear()

    async def run_once(self) -> int:
        """One round: take the due deliveries and attempt each; the number attempted."""
        lease = max((c.timeout_seconds for c in self.settings.channels), default=10.0) * 3 + 30
        async with self.store.transaction() as unit:
            due = await unit.due_deliveries(limit=BATCH, lease_seconds=lease)
        await asyncio.gather(*(self._attempt(delivery) for delivery in due))
        return len(due)

    async def _attempt(self, delivery: Delivery) -> None:
        alert, channel = delivery.alert, self.settings.channel(delivery.channel)
        error: DeliveryError | None = None
        if channel is None:
            error = DeliveryError(f"channel {delivery.channel!r} is no longer configured", permanent=True)
        else:
            try:
                await self.senders.send(alert, channel)
            except DeliveryError as exc:
                error = exc
        async with self.store.transaction() as unit:
            if error is None:
                await unit.delivered(delivery.id)
            else:
                attempts = delivery.attempts + 1
                give_up = error.permanent or attempts >= self.settings.max_attempts
                retry_in = None if give_up else backoff_seconds(attempts, self.settings)
                await unit.attempt_failed(delivery.id, str(error), retry_in=retry_in)
        labels = {"channel": delivery.channel, "severity": alert.severity}
        if error is None:
            ALERTS.labels(**labels, outcome="delivered").inc()
            log.info("alert %s (%s) delivered to %s", alert.id, alert.type, delivery.channel)
            return
        ATTEMPT_FAILURES.labels(delivery.channel).inc()
        if retry_in is None:
            ALERTS.labels(**labels, outcome="failed").inc()
            log.error(
                "alert %s (%s, %s) to %s given up after %d attempt(s): %s",
                alert.id,
                alert.type,
                alert.summary,
                delivery.channel,
                attempts,
                error,
            )
        else:
            log.warning(
                "alert %s to %s: attempt %d failed (%s); next in %.1f s",
                alert.id,
                delivery.channel,
                attempts,
                error,
                retry_in,
            )
