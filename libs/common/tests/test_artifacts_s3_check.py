"""The S3 artifact store's start-up check, against a local endpoint (moto in server mode): a service whose
bucket is missing, whose keys are refused or whose endpoint does not answer says so when it starts."""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from typing import ClassVar

import httpx
import pytest
from pydantic import SecretStr

from mloop_common import runtime as runtime_module
from mloop_common.artifacts import ArtifactStoreUnusable, S3ArtifactStore, open_artifact_store, s3_problem
from mloop_common.retry import Backoff
from mloop_common.runtime import Runtime
from mloop_common.settings import CommonSettings, KafkaSettings, S3Settings, ServiceSettings


def s3_store(location: str, settings: S3Settings) -> S3ArtifactStore:
    store = open_artifact_store(location, settings)
    assert isinstance(store, S3ArtifactStore)
    return store


@pytest.fixture
def moto_checks_keys(s3_endpoint: S3Settings, s3_bucket: str) -> Iterator[None]:
    """moto accepts any credentials unless told otherwise; then it knows no key at all (every key is wrong).
    The bucket is made first: its unsigned creation would be refused too."""
    httpx.post(f"{s3_endpoint.endpoint_url}/moto-api/reset-auth", content=b"0", timeout=10).raise_for_status()
    try:
        yield
    finally:
        httpx.post(f"{s3_endpoint.endpoint_url}/moto-api/reset-auth", content=b"inf", timeout=10).raise_for_status()


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_an_existing_bucket_passes_empty_or_not(s3_endpoint: S3Settings, s3_bucket: str) -> None:
    store = s3_store(f"s3://{s3_bucket}/artifacts", s3_endpoint)
    store.check()
    store.put(b"a model", kind="models", suffix=".skops")
    store.check()


def test_a_missing_bucket_is_named_with_the_endpoint(s3_endpoint: S3Settings) -> None:
    store = s3_store("s3://no-such-bucket/artifacts", s3_endpoint)

    with pytest.raises(ArtifactStoreUnusable) as raised:
        store.check()

    message = str(raised.value)
    assert "s3://no-such-bucket/artifacts" in message
    assert str(s3_endpoint.endpoint_url) in message
    assert "bucket 'no-such-bucket' does not exist" in message
    assert "NoSuchBucket" in message  # the endpoint's own words
    assert "Debug source" not in message and "\n" not in message  # obstore's dump left out
    assert not raised.value.transient


@pytest.mark.usefixtures("moto_checks_keys")
def test_refused_keys_point_at_the_credential_settings(s3_endpoint: S3Settings, s3_bucket: str) -> None:
    wrong = s3_endpoint.model_copy(update={"access_key_id": "nobody", "secret_access_key": SecretStr("wrong")})
    store = s3_store(f"s3://{s3_bucket}/artifacts", wrong)

    with pytest.raises(ArtifactStoreUnusable) as raised:
        store.check()

    message = str(raised.value)
    assert s3_bucket in message and str(s3_endpoint.endpoint_url) in message
    assert "refused the credentials" in message and "MLOOP_S3__ACCESS_KEY_ID" in message
    assert "InvalidAccessKeyId" in message
    assert not raised.value.transient


def test_an_endpoint_that_does_not_answer_may_still_be_starting(s3_endpoint: S3Settings) -> None:
    endpoint = f"http://127.0.0.1:{closed_port()}"
    store = s3_store("s3://mloop/artifacts", s3_endpoint.model_copy(update={"endpoint_url": endpoint}))

    with pytest.raises(ArtifactStoreUnusable) as raised:
        store.check()

    assert "s3://mloop/artifacts" in str(raised.value) and endpoint in str(raised.value)
    assert "cannot be reached" in str(raised.value)
    assert raised.value.transient


def test_plain_http_without_allow_http_says_which_setting(s3_endpoint: S3Settings, s3_bucket: str) -> None:
    store = s3_store(f"s3://{s3_bucket}", s3_endpoint.model_copy(update={"allow_http": False}))

    with pytest.raises(ArtifactStoreUnusable, match="MLOOP_S3__ALLOW_HTTP=true"):
        store.check()


@pytest.mark.parametrize(
    ("error", "meaning", "transient"),
    [
        ("status code: 403 Forbidden: <Error><Code>SignatureDoesNotMatch</Code>", "refused the credentials", False),
        ("status code: 403 Forbidden: <Error><Code>AccessDenied</Code>", "refused the credentials", False),
        ("status code: 503 Service Unavailable: <Code>XMinioServerNotInitialized</Code>", "not ready", True),
        ("status code: 400 Bad Request: <Code>InvalidBucketName</Code>", "answered InvalidBucketName", False),
    ],
)
def test_what_other_answers_mean(error: str, meaning: str, transient: bool) -> None:
    problem, may_recover = s3_problem(error, "mloop")

    assert meaning in problem
    assert may_recover is transient


class _Settings(ServiceSettings):
    service: ClassVar[str] = "serving"
    uses_database: ClassVar[bool] = False


def service_on(location: str, s3: S3Settings) -> Runtime:
    # The broker is never reached: the artifact store is checked first.
    common = CommonSettings(
        artifacts_root=location, s3=s3, kafka=KafkaSettings(bootstrap_servers=f"127.0.0.1:{closed_port()}")
    )
    return Runtime(_Settings(common=common))


@pytest.fixture
def quick_startup(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtime_module, "setup_tracing", lambda service: None)  # no process-wide tracer in tests
    monkeypatch.setattr(runtime_module, "STARTUP_BACKOFF", Backoff(initial=0.01, maximum=0.02))
    monkeypatch.setattr(runtime_module, "STARTUP_ATTEMPTS", 3)


@pytest.mark.usefixtures("quick_startup")
async def test_a_service_with_a_missing_bucket_stops_at_start_without_waiting(
    s3_endpoint: S3Settings, caplog: pytest.LogCaptureFixture
) -> None:
    service = service_on("s3://no-such-bucket/artifacts", s3_endpoint)

    with caplog.at_level(logging.WARNING), pytest.raises(ArtifactStoreUnusable, match="'no-such-bucket' does not"):
        await service.start()

    assert "retrying" not in caplog.text  # a refusal is final: no attempts wasted on it


@pytest.mark.usefixtures("quick_startup")
async def test_a_service_waits_for_an_unreachable_endpoint_then_gives_up_naming_it(
    s3_endpoint: S3Settings, caplog: pytest.LogCaptureFixture
) -> None:
    endpoint = f"http://127.0.0.1:{closed_port()}"
    unreachable = s3_endpoint.model_copy(update={"endpoint_url": endpoint, "max_retries": 0})
    service = service_on("s3://mloop/artifacts", unreachable)

    with caplog.at_level(logging.WARNING), pytest.raises(ArtifactStoreUnusable, match="cannot be reached") as raised:
        await service.start()

    assert endpoint in str(raised.value)
    assert caplog.text.count("connecting to the artifact store failed") == 2  # 3 attempts, 2 waits
