"""Open Inference Protocol v2: request tensors to instances, and the protocol's answers (no I/O)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from mloop_common.errors import InvalidInput
from mloop_serving.host import LoadedModel


class InferInput(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    data: list[Any]
    parameters: dict[str, Any] | None = None


class InferRequest(BaseModel):
    id: str | None = None
    inputs: list[InferInput] = Field(min_length=1)
    outputs: list[dict[str, Any]] | None = None
    parameters: dict[str, Any] | None = None


class InferOutput(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    data: list[Any]


class InferResponse(BaseModel):
    model_name: str
    model_version: str
    id: str
    outputs: list[InferOutput]
    parameters: dict[str, Any]


class TensorMetadata(BaseModel):
    name: str
    datatype: str
    shape: list[int]


class ModelMetadata(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]


class ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]
    models: list[str]


class ServerLive(BaseModel):
    live: bool


class ServerReady(BaseModel):
    ready: bool


class ModelReady(BaseModel):
    name: str
    ready: bool


class ModelVersionReady(BaseModel):
    name: str
    version: str
    ready: bool


def _flatten(data: list[Any]) -> list[Any]:
    flat: list[Any] = []
    for item in data:
        flat.extend(_flatten(item) if isinstance(item, list) else [item])
    return flat


def oip_instances(request: InferRequest, model: LoadedModel) -> list[dict[str, Any]]:
    """OIP inputs as rows: one tensor per feature ([n] or [n, 1]), or one [n, k] tensor in feature order."""
    if len(request.inputs) == 1 and request.inputs[0].name not in model.features:
        tensor = request.inputs[0]
        if len(tensor.shape) != 2 or tensor.shape[1] != len(model.features):
            raise InvalidInput(
                f"input {tensor.name!r} must have shape [n, {len(model.features)}] (features {model.features})",
                field="inputs[0].shape",
            )
        flat = _flatten(tensor.data)
        if len(flat) != tensor.shape[0] * tensor.shape[1]:
            raise InvalidInput("data length does not match shape", field="inputs[0].data")
        width = tensor.shape[1]
        return [
            dict(zip(model.features, flat[i * width : (i + 1) * width], strict=True)) for i in range(tensor.shape[0])
        ]
    columns: dict[str, list[Any]] = {}
    for index, tensor in enumerate(request.inputs):
        flat = _flatten(tensor.data)
        one_column = tensor.shape == [len(flat)] or tensor.shape == [len(flat), 1]
        if not one_column:
            raise InvalidInput(
                f"input {tensor.name!r}: shape {tensor.shape} does not match {len(flat)} values",
                field=f"inputs[{index}].shape",
            )
        columns[tensor.name] = flat
    lengths = {len(v) for v in columns.values()}
    if len(lengths) != 1:
        raise InvalidInput("all inputs must have the same number of rows", field="inputs")
    rows = lengths.pop()
    return [{name: values[i] for name, values in columns.items()} for i in range(rows)]


def datatype_of(values: list[Any]) -> str:
    if all(isinstance(v, bool) for v in values):
        return "BOOL"
    if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return "INT64"
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        return "FP64"
    return "BYTES"


def model_metadata(model: LoadedModel) -> ModelMetadata:
    """A loaded model as OIP metadata: one input per feature, ``predict`` (and ``predict_proba``) outputs."""
    outputs = [
        TensorMetadata(name="predict", datatype=datatype_of(model.classes) if model.classes else "FP64", shape=[-1])
    ]
    if model.task == "classification":
        outputs.append(TensorMetadata(name="predict_proba", datatype="FP64", shape=[-1, len(model.classes)]))
    return ModelMetadata(
        name=model.name,
        versions=[str(model.version)],
        platform="sklearn",
        inputs=[
            TensorMetadata(name=f, datatype="FP64" if model.kinds.get(f) == "numeric" else "BYTES", shape=[-1])
            for f in model.features
        ],
        outputs=outputs,
    )


def infer_response(
    request: InferRequest,
    model: LoadedModel,
    predictions: list[Any],
    probabilities: list[list[float]] | None,
    request_ids: list[str],
) -> InferResponse:
    """The OIP answer to ``request``: the outputs it asked for (default all), request ids as a parameter."""
    outputs = [
        InferOutput(name="predict", shape=[len(predictions)], datatype=datatype_of(predictions), data=predictions)
    ]
    if probabilities is not None:
        outputs.append(
            InferOutput(
                name="predict_proba",
                shape=[len(probabilities), len(model.classes)],
                datatype="FP64",
                data=[p for row in probabilities for p in row],
            )
        )
    wanted = {o.get("name") for o in request.outputs or []}
    if wanted:
        outputs = [o for o in outputs if o.name in wanted]
    return InferResponse(
        model_name=model.name,
        model_version=str(model.version),
        id=request.id or request_ids[0],
        outputs=outputs,
        parameters={"request_ids": request_ids},
    )
