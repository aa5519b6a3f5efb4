"""A real serving process on the real stack, with real trained models, for inference clients written by others.

Two models go through the whole loop (ingest -> trainer -> validator -> registry -> serving):
``mixed`` takes a category and two numbers (BYTES + FP64 inputs), ``numeric`` only numbers (so one
[N, F] tensor can carry a row).
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conformance.served import SERVICES, Served, ServedModel, churn_frame, declare_and_publish, wait_until_served
from tests.conftest import REPO, running
from tests.stack import ServiceStack


@pytest.fixture(scope="package")
def served(kafka_bootstrap: str, postgres: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """Serving on the real stack, answering for two freshly trained models (version 1 of each)."""
    stack = ServiceStack(
        bootstrap=kafka_bootstrap, database_url=postgres, root=tmp_path_factory.mktemp("conformance"), repo=REPO
    )
    # Inference clients are used unchanged, so without credentials: this deployment trusts its inference
    # network (MLOOP_AUTH__OPEN_PREDICT); everything else still needs a key.
    stack.env["MLOOP_AUTH__OPEN_PREDICT"] = "true"
    with running(stack, *SERVICES):
        suffix = uuid.uuid4().hex[:6]
        frame = churn_frame(600, seed=7)
        mixed = ServedModel(
            f"mixed-{suffix}", 1, ["plan", "usage", "calls"], churn_frame(5, seed=99).drop(columns="churned")
        )
        numeric = ServedModel(f"numeric-{suffix}", 1, ["usage", "calls"], mixed.rows[["usage", "calls"]])
        declare_and_publish(stack, mixed.name, frame, mixed.features)
        declare_and_publish(stack, numeric.name, frame[["usage", "calls", "churned"]], numeric.features)
        wait_until_served(stack, [mixed.name, numeric.name])
        yield Served(url=stack.urls["serving"], mixed=mixed, numeric=numeric)


# KServe's SDK pins pandas<3, so it cannot share mloop's lock: it lives in a venv of its own, made once.
KSERVE_VERSION = "0.21.0"
KSERVE_VENV = REPO / ".cache" / "kserve-client-venv"
UV = REPO / ".cache" / "uv-tool" / "bin" / "uv"


@pytest.fixture(scope="session")
def kserve_python() -> Path:
    """The Python of a venv holding KServe's SDK from PyPI (created on first use, then reused)."""
    python = KSERVE_VENV / "bin" / "python"
    marker = KSERVE_VENV / f".kserve-{KSERVE_VERSION}-installed"
    if not marker.exists():
        # Built aside and moved in whole, so an interrupted install is never taken for a finished one.
        building = KSERVE_VENV.with_name(f"{KSERVE_VENV.name}.building-{os.getpid()}")
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(building)], check=True)
        # uv (which `make setup` installs) resolves and installs it in seconds; pip took two minutes of CI.
        subprocess.run(
            [
                str(UV),
                "pip",
                "install",
                "--quiet",
                "--python",
                str(building / "bin" / "python"),
                f"kserve=={KSERVE_VERSION}",
            ],
            check=True,
            timeout=1200,
        )
        (building / marker.name).touch()
        subprocess.run(["rm", "-rf", str(KSERVE_VENV)], check=True)
        building.rename(KSERVE_VENV)
    return python
