"""Triton's HTTP client (``tritonclient[http]``), used as its documentation shows, against mloop serving.

With its defaults the client sends no Content-Type, sends tensors as binary data after the JSON and asks
for every output as binary; with ``binary_data=False`` everywhere it speaks plain JSON.
"""

from __future__ import annotations

import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from tests.conformance.served import Served, ServedModel

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def client(served: Served) -> triton.InferenceServerClient:
    return triton.InferenceServerClient(served.url.removeprefix("http://"))


def feature_inputs(
    model: ServedModel, client: triton.InferenceServerClient, *, binary: bool
) -> list[triton.InferInput]:
    """One input per feature, named and typed as the model's metadata says."""
    metadata = client.get_model_metadata(model.name)
    inputs = []
    for spec in metadata["inputs"]:
        values = model.column(spec["name"])
        tensor = triton.InferInput(spec["name"], [len(values)], spec["datatype"])
        tensor.set_data_from_numpy(values, binary_data=binary)
        inputs.append(tensor)
    return inputs


def labels(result: triton.InferResult) -> list[object]:
    return [v.decode() if isinstance(v, bytes) else v for v in result.as_numpy("predict").tolist()]


def test_server_is_live_ready_and_announces_binary_tensors(client):
    assert client.is_server_live() and client.is_server_ready()
    assert "binary_tensor_data" in client.get_server_metadata()["extensions"]


def test_model_metadata_describes_the_features_and_outputs(served, client):
    metadata = client.get_model_metadata(served.mixed.name)
    versioned = client.get_model_metadata(served.mixed.name, model_version="1")

    assert metadata == versioned
    assert [(i["name"], i["datatype"]) for i in metadata["inputs"]] == [
        ("plan", "BYTES"),
        ("usage", "FP64"),
        ("calls", "FP64"),
    ]
    assert [(o["name"], o["datatype"], o["shape"]) for o in metadata["outputs"]] == [
        ("predict", "BYTES", [-1]),
        ("predict_proba", "FP64", [-1, 2]),
    ]


def test_model_readiness_with_and_without_a_version(served, client):
    assert client.is_model_ready(served.mixed.name)
    assert client.is_model_ready(served.mixed.name, model_version="1")
    assert not client.is_model_ready(served.mixed.name, model_version="9")
    assert not client.is_model_ready("no-such-model")


def test_infer_with_the_clients_defaults_binary_in_and_out(served, client):
    model = served.mixed

    result = client.infer(model.name, feature_inputs(model, client, binary=True), request_id="triton-binary-1")

    response = result.get_response()
    assert response["id"] == "triton-binary-1" and response["model_version"] == "1"
    assert all("binary_data_size" in o["parameters"] for o in response["outputs"])
    assert labels(result) == served.simple_api_predictions(model)
    probabilities = result.as_numpy("predict_proba")
    assert probabilities.shape == (5, 2) and np.allclose(probabilities.sum(axis=1), 1.0)
    assert len(response["parameters"]["request_ids"]) == 5


def test_infer_in_json_only(served, client):
    model = served.mixed
    outputs = [triton.InferRequestedOutput(n, binary_data=False) for n in ("predict", "predict_proba")]

    result = client.infer(model.name, feature_inputs(model, client, binary=False), outputs=outputs)

    response = result.get_response()
    assert "id" not in response
    assert all("data" in o for o in response["outputs"])
    assert labels(result) == served.simple_api_predictions(model)


def test_versioned_infer_answers_with_that_version(served, client):
    model = served.mixed

    result = client.infer(model.name, feature_inputs(model, client, binary=True), model_version="1")

    assert result.get_response()["model_version"] == "1"
    assert labels(result) == served.simple_api_predictions(model)


def test_one_n_by_f_tensor_carries_rows_of_a_numeric_model(served, client):
    model = served.numeric
    rows = model.rows[model.features].to_numpy(dtype=np.float64)
    matrix = triton.InferInput("input-0", list(rows.shape), "FP64")
    matrix.set_data_from_numpy(rows)

    result = client.infer(model.name, [matrix], outputs=[triton.InferRequestedOutput("predict")])

    assert [o["name"] for o in result.get_response()["outputs"]] == ["predict"]
    assert labels(result) == served.simple_api_predictions(model)


def test_errors_reach_the_client_as_readable_messages_with_their_status(served, client):
    model = served.mixed
    inputs = feature_inputs(model, client, binary=True)

    with pytest.raises(InferenceServerException) as missing_output:
        client.infer(model.name, inputs, outputs=[triton.InferRequestedOutput("explanation")])
    with pytest.raises(InferenceServerException) as unknown_version:
        client.infer(model.name, inputs, model_version="9")
    wrong_type = triton.InferInput("usage", [5], "BYTES")
    wrong_type.set_data_from_numpy(np.array([b"high"] * 5, dtype=np.object_))
    with pytest.raises(InferenceServerException) as bad_input:
        client.infer(model.name, [inputs[0], wrong_type, inputs[2]])

    assert missing_output.value.status() == "400"
    assert "has no output 'explanation'" in missing_output.value.message()
    assert unknown_version.value.status() == "404" and "version 9" in unknown_version.value.message()
    assert bad_input.value.status() == "400" and "feature 'usage' is a number" in bad_input.value.message()
