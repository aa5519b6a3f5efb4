"""schemathesis against every service's OpenAPI, on the real stack with an admin key: no answer is a server
error, and every answer has a status and a body its operation documents.

The stack first gets one real model (a spec, a dataset version, the version trained, registered, promoted and
loaded by serving), so that fuzzing reaches past "not found": each operation is fuzzed once with generated
path parameters and once with its model and version names pinned to that model's.

A fixed seed makes a run repeatable; MLOOP_FUZZ_EXAMPLES (default 30) bounds the examples per operation, pass
and generation mode (schema-valid, then schema-invalid input): a few minutes on 2 cores.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable
from typing import Any

import httpx
import hypothesis
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance, status_code_conformance

from tests.stack import ServiceStack

pytestmark = [pytest.mark.fuzz, pytest.mark.e2e]

SEED = 20261130
EXAMPLES = int(os.environ.get("MLOOP_FUZZ_EXAMPLES", "30"))
CHECKS = [not_a_server_error, response_schema_conformance, status_code_conformance]
# Serving first, while the seeded model is still loaded: the registry's pass may delete or move its aliases.
SERVICES = ("serving", "drift", "trainer", "validator", "ingest", "registry")
MODEL = "fuzz"
SPEC = f"""
name: {MODEL}
dataset: {MODEL}
task: classification
target: label
estimators: [{{class: LogisticRegression, params: {{C: [1.0]}}}}]
metric: accuracy
"""
# Path parameters pinned in the second pass; run ids are not: reproducing the real run refits it per example.
PINNED = {"name": MODEL, "model": MODEL, "version": 1}

# Operations not fuzzed, or not with pinned names, and why.
EXCLUDED: dict[str, str] = {}
NOT_PINNED = {
    "POST /v1/datasets/{name}/versions": "a new version of the seeded dataset retrains the model (minutes of CPU)",
}
# Operations whose failures are known and not fixed here (owned elsewhere): operation -> the finding.
KNOWN: dict[str, str] = {}


@pytest.fixture(scope="module")
def seeded(stack: ServiceStack) -> ServiceStack:
    """One model through the whole loop: spec declared, dataset published, version 1 registered and served."""
    with httpx.Client(headers=stack.headers, timeout=30) as client:
        declared = client.post(
            f"{stack.urls['registry']}/v1/models", content=SPEC, headers={"content-type": "application/yaml"}
        )
        assert declared.status_code == 201, declared.text
        rng = random.Random(SEED)
        rows = [f"{i},{(x := rng.random()):.4f},{rng.random():.4f},{int(x > 0.5)}" for i in range(400)]
        csv = "\n".join(["id,x1,x2,label", *rows]).encode()
        published = client.post(
            f"{stack.urls['ingest']}/v1/datasets/{MODEL}/versions",
            files={"file": ("fuzz.csv", csv)},
            data={"target": "label"},
        )
        assert published.status_code == 201, published.text
        ready = f"{stack.urls['serving']}/v2/models/{MODEL}/ready"
        deadline = time.monotonic() + 180
        while client.get(ready).status_code != 200:
            assert time.monotonic() < deadline, f"the seeded model was not served in time (logs in {stack.logs})"
            time.sleep(0.5)
    return stack


# Found by probing serving's OIP routes beside the fuzz run, and run before it while the model is served.
# Serving is owned elsewhere, so not fixed here; strict, so the fix shows as an unexpected pass.
def test_an_infer_request_without_rows_is_a_client_error(seeded: ServiceStack) -> None:
    empty = [{"name": name, "shape": [0], "datatype": "FP64", "data": []} for name in ("id", "x1", "x2")]

    response = httpx.post(
        f"{seeded.urls['serving']}/v2/models/{MODEL}/infer", json={"inputs": empty}, headers=seeded.headers
    )

    assert response.status_code == 400 and "no rows" in response.json()["error"]


def fuzz_operation(operation: Any, base_url: str, session: requests.Session) -> list[str]:
    """The distinct failures of one operation: generated, then pinned path parameters; valid, then invalid."""
    failures: dict[str, str] = {}
    names = {p.name for p in operation.path_parameters}
    pinned = {k: v for k, v in PINNED.items() if k in names}
    passes = [None, pinned] if pinned and operation.label not in NOT_PINNED else [None]
    for path_parameters in passes:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            try:
                _runner(operation, mode, path_parameters, base_url, session, failures)()
            except hypothesis.errors.Unsatisfiable:  # nothing left to make invalid (no inputs, or all pinned)
                assert mode is GenerationMode.NEGATIVE, operation.label
    return list(failures.values())


def _runner(
    operation: Any,
    mode: GenerationMode,
    path_parameters: dict[str, Any] | None,
    base_url: str,
    session: requests.Session,
    failures: dict[str, str],
) -> Callable[[], None]:
    strategy = operation.as_strategy(generation_mode=mode, path_parameters=path_parameters)

    @hypothesis.seed(SEED)
    @hypothesis.settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate],  # no shrinking: every distinct failure is kept, not the first
        suppress_health_check=list(HealthCheck),
        print_blob=False,
    )
    @hypothesis.given(case=strategy)
    def run(case: schemathesis.Case) -> None:
        try:
            case.call_and_validate(
                base_url=base_url, session=session, headers=dict(session.headers), checks=CHECKS, timeout=30
            )
        except (AssertionError, schemathesis.errors.FailureGroup) as exc:  # one failure, or one per failed check
            found = exc.exceptions if isinstance(exc, schemathesis.errors.FailureGroup) else (exc,)
            key = " + ".join(sorted({getattr(f, "title", type(f).__name__) for f in found}))
            where = "pinned" if path_parameters else "generated"
            failures.setdefault(key, f"{operation.label} [{mode.value}, {where}] {key}\n{exc}")

    return run


@pytest.mark.parametrize("service", SERVICES)
def test_no_server_errors_and_every_answer_is_documented(seeded: ServiceStack, service: str) -> None:
    base_url = seeded.urls[service]
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json", headers=seeded.headers, timeout=30)
    session = requests.Session()
    session.headers.update(seeded.headers)
    found: list[str] = []
    tolerated: list[str] = []
    fuzzed = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        if operation.label in EXCLUDED:
            continue
        fuzzed += 1
        failures = fuzz_operation(operation, base_url, session)
        (tolerated if operation.label in KNOWN else found).extend(failures)
    print(f"{service}: {fuzzed} operations fuzzed; known failures tolerated: {len(tolerated)}")
    for failure in tolerated:
        print(failure.splitlines()[0])
    assert fuzzed > 0
    assert not found, f"{len(found)} failures:\n\n" + "\n\n".join(found)
