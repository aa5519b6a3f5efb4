"""Calls mloop serving with KServe's Python REST client, unchanged; run with the KServe venv's Python.

KServe's SDK cannot be installed beside mloop (it pins pandas<3), so this script runs in its own venv
and imports nothing from mloop. It reads one JSON job from stdin (``url``, and for the ``mixed`` and
``numeric`` models their ``name`` and ``columns`` of feature values) and prints one JSON object with
what the client returned; the test makes the assertions.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import httpx
import numpy as np
from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig
from kserve.protocol.infer_type import RequestedOutput


def feature_inputs(columns: dict[str, list[Any]], *, binary: bool) -> list[InferInput]:
    inputs = []
    for name, values in columns.items():
        text = isinstance(values[0], str)
        array = np.array(values, dtype=np.object_ if text else np.float64)
        tensor = InferInput(name, [len(values)], "BYTES" if text else "FP64")
        if binary:
            tensor.set_data_from_numpy(array, binary_data=True)
        else:
            tensor.data = values
        inputs.append(tensor)
    return inputs


def outputs_of(response: Any) -> dict[str, Any]:
    found = {}
    for output in response.outputs:
        values = output.as_numpy().tolist()
        found[output.name] = [v.decode() if isinstance(v, bytes) else v for v in values]
    return found


async def main(job: dict[str, Any]) -> dict[str, Any]:
    url = job["url"]
    mixed, numeric = job["mixed"], job["numeric"]
    results: dict[str, Any] = {}
    async with InferenceRESTClient(RESTConfig(protocol="v2", timeout=30)) as client:
        results["live"] = await client.is_server_live(url)
        results["ready"] = await client.is_server_ready(url)
        results["model_ready"] = await client.is_model_ready(url, mixed["name"])
        results["unknown_model_ready"] = await client.is_model_ready(url, "no-such-model")

        as_json = await client.infer(
            url,
            InferRequest(mixed["name"], feature_inputs(mixed["columns"], binary=False), request_id="kserve-json-1"),
            model_name=mixed["name"],
        )
        results["json"] = {"id": as_json.id, "outputs": outputs_of(as_json), "parameters": as_json.parameters}

        binary_request = InferRequest(
            mixed["name"],
            feature_inputs(mixed["columns"], binary=True),
            request_id="kserve-binary-1",
            request_outputs=[RequestedOutput("predict", {"binary_data": True})],
        )
        headers: dict[str, str] = {}
        as_binary = await client.infer(url, binary_request, model_name=mixed["name"], response_headers=headers)
        results["binary"] = {
            "id": as_binary.id,
            "outputs": outputs_of(as_binary),
            "inference_header": headers.get("inference-header-content-length"),
        }

        # The client builds /v2/models/{name}/infer itself; a versioned path is a full URL it posts to as given.
        versioned = await client.infer(
            f"{url}/v2/models/{mixed['name']}/versions/1/infer",
            InferRequest(mixed["name"], feature_inputs(mixed["columns"], binary=False)),
            is_graph_endpoint=True,
        )
        results["versioned"] = {
            "model_version": versioned["model_version"],
            "predict": next(o["data"] for o in versioned["outputs"] if o["name"] == "predict"),
        }

        rows = list(zip(*numeric["columns"].values(), strict=True))
        matrix = InferInput("input-0", [len(rows), len(numeric["columns"])], "FP64")
        matrix.set_data_from_numpy(np.array(rows, dtype=np.float64), binary_data=True)
        single = await client.infer(url, InferRequest(numeric["name"], [matrix]), model_name=numeric["name"])
        results["matrix"] = {"outputs": outputs_of(single)}

        try:
            await client.infer(
                url,
                InferRequest(mixed["name"], feature_inputs(mixed["columns"], binary=False)),
                model_name="no-such-model",
            )
            results["unknown_model_error"] = None
        except httpx.HTTPStatusError as exc:
            results["unknown_model_error"] = {"status": exc.response.status_code, "message": str(exc)}
    return results


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(json.load(sys.stdin)))))
