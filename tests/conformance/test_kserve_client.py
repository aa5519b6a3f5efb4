"""KServe's Python REST client (``kserve.InferenceRESTClient``, protocol v2), unchanged, against mloop serving.

The client runs in its own venv (see ``kserve_python``) from ``kserve_client.py``; this test gives it
the job and checks what it got back against mloop's own JSON API.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.conformance.served import Served, ServedModel

pytestmark = pytest.mark.e2e
SCRIPT = Path(__file__).with_name("kserve_client.py")


def columns(model: ServedModel) -> dict[str, list[Any]]:
    return {feature: model.rows[feature].tolist() for feature in model.features}


@pytest.fixture(scope="module")
def kserve(served: Served, kserve_python: Path) -> dict[str, Any]:
    job = {
        "url": served.url,
        "mixed": {"name": served.mixed.name, "columns": columns(served.mixed)},
        "numeric": {"name": served.numeric.name, "columns": columns(served.numeric)},
    }
    run = subprocess.run(
        [str(kserve_python), str(SCRIPT)], input=json.dumps(job), capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, f"the KServe client failed:\n{run.stderr[-3000:]}"
    return dict(json.loads(run.stdout))


def test_health_and_model_readiness(kserve):
    assert (kserve["live"], kserve["ready"], kserve["model_ready"]) == (True, True, True)
    assert kserve["unknown_model_ready"] is False


def test_json_infer_echoes_the_request_id_and_matches_mloops_own_answers(served, kserve):
    expected = served.simple_api_predictions(served.mixed)

    assert kserve["json"]["id"] == "kserve-json-1"
    assert kserve["json"]["outputs"]["predict"] == expected
    assert len(kserve["json"]["outputs"]["predict_proba"]) == len(expected)
    assert len(kserve["json"]["parameters"]["request_ids"]) == len(expected)


def test_binary_infer_answers_binary_outputs_the_client_decodes(served, kserve):
    assert kserve["binary"]["id"] == "kserve-binary-1"
    assert kserve["binary"]["inference_header"] is not None
    assert kserve["binary"]["outputs"] == {"predict": served.simple_api_predictions(served.mixed)}


def test_versioned_infer(served, kserve):
    assert kserve["versioned"] == {"model_version": "1", "predict": served.simple_api_predictions(served.mixed)}


def test_one_n_by_f_tensor_for_a_numeric_model(served, kserve):
    assert kserve["matrix"]["outputs"]["predict"] == served.simple_api_predictions(served.numeric)


def test_an_unknown_model_is_a_404_whose_message_the_client_shows(kserve):
    error = kserve["unknown_model_error"]

    assert error["status"] == 404 and "model 'no-such-model' is not served here" in error["message"]
