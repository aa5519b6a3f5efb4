"""Fixtures the validator tests share."""

from __future__ import annotations

from pathlib import Path

import pytest

from mloop_common.artifacts import ArtifactStore


@pytest.fixture
def artifacts(tmp_path: Path) -> ArtifactStore:
    return ArtifactStore(tmp_path)
