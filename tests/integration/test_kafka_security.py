"""mloop's Kafka security settings against the session broker's SCRAM-SHA-256 listener: the right
credentials create topics, publish and read; wrong ones are refused."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from aiokafka.errors import KafkaError

from mloop_common.bus import BusConfig, Producer, ensure_topics, tail
from mloop_common.events import Envelope
from mloop_common.settings import KafkaSettings
from tests.conftest import KAFKA_SASL_PORT, SCRAM_PASSWORD, SCRAM_USER


def scram_bus(password: str) -> BusConfig:
    settings = KafkaSettings(
        bootstrap_servers=f"127.0.0.1:{KAFKA_SASL_PORT}",
        security_protocol="SASL_PLAINTEXT",
        sasl_mechanism="SCRAM-SHA-256",
        sasl_username=SCRAM_USER,
        sasl_password=password,  # type: ignore[arg-type]
    )
    return BusConfig(settings.bootstrap_servers, 1, "it-scram", security=settings.client_security())


async def test_with_scram_credentials_the_bus_creates_publishes_and_reads(kafka_bootstrap: str) -> None:
    config = scram_bus(SCRAM_PASSWORD)
    topic = f"it.scram.{uuid.uuid4().hex[:8]}"
    await ensure_topics(config, [topic], with_dlq=False)
    event = Envelope(type=topic, source="tests", subject="m", data={"value": 1}, correlationid=str(uuid.uuid4()))

    async with tail(config, [topic], from_beginning=True) as records:
        producer = Producer(config)
        await producer.start()
        try:
            await producer.publish(event)
        finally:
            await producer.stop()
        record, received = await asyncio.wait_for(anext(aiter(records)), 30)

    assert received is not None and received.id == event.id


async def test_wrong_scram_credentials_are_refused(kafka_bootstrap: str) -> None:
    with pytest.raises(KafkaError):
        await asyncio.wait_for(ensure_topics(scram_bus("not-the-password"), ["it.scram.refused"]), 60)


def test_sasl_without_credentials_is_a_settings_error() -> None:
    with pytest.raises(ValueError, match="MLOOP_KAFKA__SASL_USERNAME"):
        KafkaSettings(security_protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-512")
