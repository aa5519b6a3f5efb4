"""The alerts' outbox through the registry's fake store: deliveries written with the inbox claim, then sent
by the worker with retries, backoff and giving up (webhooks go to an in-process receiver, no network)."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from prometheus_client import REGISTRY

from mloop_common.events import Envelope
from mloop_common.testing import MemoryStore
from mloop_registry.alert_delivery import AlertWriter, DeliveryWorker, Senders, check_target
from mloop_registry.alerts import AlertSettings, RefusedTarget, verify

from .fakes import MemoryRegistryUnit, memory_store
from .test_alerts import drift, rejected, served

SECRET = "s3cret"


def settings(*channels: dict[str, Any], **fields: Any) -> AlertSettings:
    return AlertSettings.model_validate(
        {"channels": list(channels), "backoff_seconds": 0.01, "max_backoff_seconds": 0.05, **fields}
    )


def hook(name: str = "hook", url: str = "https://hooks.example/mloop", **fields: Any) -> dict[str, Any]:
    return {"name": name, "kind": "webhook", "url": url, "secret": SECRET, **fields}


class Receiver:
    """A webhook endpoint answering with the given statuses in turn (then 200), keeping what it got."""

    def __init__(self, *statuses: int, location: str | None = None) -> None:
        self.statuses = list(statuses)
        self.location = location
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        status = self.statuses.pop(0) if self.statuses else 200
        headers = {"Location": self.location} if self.location else {}
        return httpx.Response(status, headers=headers)


async def public(host: str, port: int) -> list[str]:
    return ["93.184.215.14"]


def senders(receiver: Receiver, resolver: Any = public) -> Senders:
    made = Senders(resolver=resolver)
    made.client = httpx.AsyncClient(transport=httpx.MockTransport(receiver), follow_redirects=False)
    return made


def parts(
    config: AlertSettings, receiver: Receiver, resolver: Any = public
) -> tuple[MemoryStore[MemoryRegistryUnit], AlertWriter, DeliveryWorker]:
    store = memory_store()
    worker = DeliveryWorker(store=store, settings=config, senders=senders(receiver, resolver))
    writer = AlertWriter(store=store, settings=config, registry_url="http://registry", on_written=worker.wake)
    return store, writer, worker


async def handle(writer: AlertWriter, event: Envelope) -> None:
    await writer.on_event(event.payload(), event)


async def rows(store: MemoryStore[MemoryRegistryUnit]) -> list[Any]:
    async with store.transaction() as unit:
        return await unit.deliveries()


async def until_settled(store: MemoryStore[MemoryRegistryUnit], worker: DeliveryWorker) -> list[Any]:
    """Run rounds until every delivery is delivered or given up (backoffs here are milliseconds)."""
    for _ in range(500):
        await worker.run_once()
        found = await rows(store)
        if all(d.delivered_at or d.failed_at for d in found):
            return found
        await asyncio.sleep(0.01)
    raise AssertionError(f"deliveries not settled: {await rows(store)}")


def counted(channel: str, severity: str, outcome: str) -> float:
    labels = {"channel": channel, "severity": severity, "outcome": outcome}
    return REGISTRY.get_sample_value("mloop_alerts_total", labels) or 0.0


async def test_each_alert_is_written_once_per_matching_channel_with_the_inbox_claim():
    config = settings(hook("all"), hook("pager", min_severity="critical"), hook("other", models=["fraud*"]))
    store, writer, _ = parts(config, Receiver())
    event = rejected()

    await handle(writer, event)
    await handle(writer, event)  # redelivered: claimed already, nothing more

    [row] = await rows(store)
    assert (row.channel, row.alert.type, row.attempts, row.delivered_at) == ("all", "model.rejected", 0, None)
    assert store.state.inbox == {("mloop-registry", event.id)}
    await handle(writer, drift("data_quality", "investigate"))  # critical: both channels for all models
    assert [r.channel for r in await rows(store)] == ["all", "all", "pager"]


async def test_nothing_is_written_without_a_channel_for_a_loaded_model_or_for_an_old_event():
    store, writer, _ = parts(settings(), Receiver())
    await handle(writer, rejected())
    assert await rows(store) == [] and store.state.inbox == set()

    store, writer, _ = parts(settings(hook(), max_event_age_seconds=60), Receiver())
    await handle(writer, served(loaded=True))
    old = rejected()
    await handle(writer, Envelope(**{**old.__dict__, "time": datetime.now(UTC) - timedelta(hours=1)}))
    assert await rows(store) == []


async def test_a_webhook_that_fails_once_gets_the_same_signed_alert_again_and_is_delivered():
    receiver = Receiver(500)
    store, writer, worker = parts(settings(hook("retry-hook")), receiver)
    before = counted("retry-hook", "warning", "delivered")
    await handle(writer, rejected())

    [row] = await until_settled(store, worker)

    assert row.delivered_at is not None and row.attempts == 2 and row.failed_at is None and row.last_error is None
    first, second = receiver.requests
    assert first.content == second.content
    for request in receiver.requests:
        assert request.headers["X-Mloop-Alert-Id"] == row.alert.id
        assert verify(request.content, SECRET, request.headers["X-Mloop-Signature"])
        assert json.loads(request.content)["link"].endswith(
            f"/v1/evaluations/{row.alert.details['evaluation_id']}/report.html"
        )
    assert counted("retry-hook", "warning", "delivered") == before + 1


async def test_after_max_attempts_a_delivery_is_given_up_and_counted():
    receiver = Receiver(*[503] * 10)
    store, writer, worker = parts(settings(hook("down-hook"), max_attempts=3), receiver)
    before = counted("down-hook", "critical", "failed")
    await handle(writer, served(loaded=False))

    [row] = await until_settled(store, worker)

    assert row.failed_at is not None and row.delivered_at is None and row.attempts == 3
    assert "HTTP 503" in (row.last_error or "") and len(receiver.requests) == 3
    assert counted("down-hook", "critical", "failed") == before + 1


async def test_redirects_are_not_followed():
    receiver = Receiver(302, 302, location="http://169.254.169.254/latest/meta-data")
    store, writer, worker = parts(settings(hook("moved"), max_attempts=2), receiver)
    await handle(writer, rejected())

    [row] = await until_settled(store, worker)

    assert (
        row.failed_at is not None and "redirect" in (row.last_error or "") and "not followed" in (row.last_error or "")
    )
    assert [str(r.url) for r in receiver.requests] == ["https://hooks.example/mloop"] * 2


async def test_a_target_on_a_private_address_is_given_up_at_once_without_a_request():
    async def private(host: str, port: int) -> list[str]:
        return ["10.0.0.7"]

    receiver = Receiver()
    store, writer, worker = parts(settings(hook("internal")), receiver, resolver=private)
    await handle(writer, rejected())

    [row] = await until_settled(store, worker)

    assert row.failed_at is not None and row.attempts == 1 and "10.0.0.7" in (row.last_error or "")
    assert receiver.requests == []


async def test_a_private_target_is_allowed_when_the_channel_says_so():
    async def private(host: str, port: int) -> list[str]:
        return ["10.0.0.7"]

    receiver = Receiver()
    store, writer, worker = parts(settings(hook("lab", allow_private=True)), receiver, resolver=private)
    await handle(writer, rejected())
    [row] = await until_settled(store, worker)
    assert row.delivered_at is not None and len(receiver.requests) == 1


async def test_a_delivery_to_a_channel_removed_from_the_settings_is_given_up():
    receiver = Receiver()
    store, writer, _ = parts(settings(hook("gone")), receiver)
    await handle(writer, rejected())
    worker = DeliveryWorker(store=store, settings=settings(hook("new")), senders=senders(receiver))

    [row] = await until_settled(store, worker)

    assert row.failed_at is not None and "no longer configured" in (row.last_error or "")


async def test_names_are_resolved_and_checked_before_each_attempt():
    for url in ("http://localhost:9/x", "http://127.0.0.1/x", "http://[::1]/x"):
        try:
            await check_target(url, allow_private=False)
        except RefusedTarget as exc:
            assert "loopback" in str(exc)
        else:
            raise AssertionError(f"{url} was allowed")
    await check_target("http://localhost:9/x", allow_private=True)
