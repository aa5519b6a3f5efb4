"""Fixtures of the common library's tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from mloop_common.settings import S3Settings
from mloop_common.testing import local_s3, new_bucket, recorded_spans


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[S3Settings]:
    """A local S3-compatible endpoint (moto in server mode, in this process) and the settings that reach it."""
    with local_s3() as endpoint:
        yield endpoint


@pytest.fixture
def s3_bucket(s3_endpoint: S3Settings) -> str:
    """A new, empty bucket on the endpoint; its name."""
    return new_bucket(s3_endpoint)


@pytest.fixture(scope="session")
def exporter() -> Iterator[InMemorySpanExporter]:
    """Spans finished in this process."""
    with recorded_spans() as memory:
        yield memory


@pytest.fixture
def spans(exporter: InMemorySpanExporter) -> InMemorySpanExporter:
    """The span exporter, emptied: what the test itself finishes."""
    exporter.clear()
    return exporter
