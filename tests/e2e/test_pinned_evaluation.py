"""A pinned evaluation set end to end, with the six services as processes on the real broker and database.

- a spec that pins a dataset version: each evaluation has a section measuring the candidate (and, once there
  is one, the champion) on that version's rows, besides the run's holdout, and the report page shows it;
- a spec that pins a version that was never published: the candidate is rejected with that reason.
"""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from tests.conftest import eventually
from tests.e2e.test_release_gate import TIMEOUT, declare, publish, spec
from tests.faults.groups import committed, end_offsets
from tests.stack import ServiceStack

pytestmark = pytest.mark.asyncio(loop_scope="module")


async def validator_knows_the_published_versions(bootstrap: str) -> bool:
    """Whether the validator has read every data.published record so far (where each snapshot is)."""
    ends = await end_offsets(bootstrap, ["data.published"])
    done = await committed(bootstrap, "mloop-validator-data")
    return all(done.get(tp, 0) >= end for tp, end in ends.items() if end > 0)


async def evaluations(validator: httpx.AsyncClient, name: str, count: int) -> list[dict[str, Any]] | None:
    found = (await validator.get("/v1/evaluations", params={"model": name})).json()["evaluations"]
    return list(reversed(found)) if len(found) >= count else None  # oldest first


async def test_candidates_and_the_champion_are_measured_on_the_pinned_version(
    stack: ServiceStack, clients: dict[str, httpx.AsyncClient]
) -> None:
    registry, validator, ingest = clients["registry"], clients["validator"], clients["ingest"]
    name = f"pinned-{uuid.uuid4().hex[:6]}"
    pinned = await publish(ingest, name, seed=11)  # the evaluation set: its rows judge every later candidate
    await eventually(lambda: validator_knows_the_published_versions(stack.bootstrap), timeout=TIMEOUT, interval=0.5)

    await declare(registry, spec(name) | {"evaluation": {"version": pinned}})  # trains at once on that version
    [first] = await eventually(lambda: evaluations(validator, name, 1), timeout=TIMEOUT, interval=1.0)
    await publish(ingest, name, seed=12)  # a second candidate, judged against the first as champion
    [_, second] = await eventually(lambda: evaluations(validator, name, 2), timeout=TIMEOUT, interval=1.0)

    assert first["decision"] == "registered" and first["champion_version"] is None
    section = first["report"]["pinned"]
    assert (section["dataset"], section["version"], section["rows"], section["error"]) == (name, pinned, 600, None)
    assert 0.8 < section["candidate_metrics"]["accuracy"] <= 1.0 and section["champion_metrics"] is None
    assert first["holdout_rows"] < 600  # the holdout is a share of the training version, reported as before

    assert second["champion_version"] == 1
    section = second["report"]["pinned"]
    assert section["error"] is None and section["version"] == pinned
    assert set(section["candidate_metrics"]) >= {"accuracy", "roc_auc", "log_loss", "brier"}
    assert section["champion_metrics"]["accuracy"] > 0.8  # the champion measured on the same pinned rows
    pinned_checks = {c["name"]: c for c in second["checks"] if c["name"].startswith("pinned")}
    assert pinned_checks["pinned"]["passed"] and "pinned.improvement.accuracy" in pinned_checks
    gain = section["candidate_metrics"]["accuracy"] - section["champion_metrics"]["accuracy"]
    assert pinned_checks["pinned.improvement.accuracy"]["value"] == pytest.approx(gain)
    assert (second["decision"] == "registered") == all(c["passed"] for c in second["checks"])

    page = (await validator.get(f"/v1/evaluations/{second['id']}/report.html")).text
    assert f"Pinned evaluation set: {name} v{pinned}" in page and "600 labelled rows" in page


async def test_a_spec_pinning_a_version_never_published_has_its_candidate_rejected_with_the_reason(
    clients: dict[str, httpx.AsyncClient],
) -> None:
    registry, validator = clients["registry"], clients["validator"]
    name = f"pinned-missing-{uuid.uuid4().hex[:6]}"
    await declare(registry, spec(name) | {"evaluation": {"version": 7}})

    await publish(clients["ingest"], name, seed=1)

    [evaluation] = await eventually(lambda: evaluations(validator, name, 1), timeout=TIMEOUT, interval=1.0)
    assert evaluation["decision"] == "rejected"
    [failed] = [c for c in evaluation["checks"] if not c["passed"]]
    assert failed["name"] == "pinned" and f"dataset {name} has no published version 7" in failed["message"]
    assert evaluation["report"]["pinned"]["error"].startswith(f"dataset {name} has no published version 7")
    assert (await registry.get(f"/v1/models/{name}/versions")).json()["versions"] == []
