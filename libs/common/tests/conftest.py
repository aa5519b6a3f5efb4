"""Fixtures of the common library's tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from mloop_common.settings import S3Settings
from mloop_common.testing import local_s3, new_bucket


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[S3Settings]:
    """A local S3-compatible endpoint (moto in server mode, in this process) and the settings that reach it."""
    with local_s3() as endpoint:
        yield endpoint


@pytest.fixture
def s3_bucket(s3_endpoint: S3Settings) -> str:
    """A new, empty bucket on the endpoint; its name."""
    return new_bucket(s3_endpoint)
