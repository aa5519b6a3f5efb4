"""Open Inference Protocol v2 over REST: request bodies read and checked, answers encoded (no I/O).

Bodies come as JSON, or as JSON followed by raw tensor bytes (the binary tensor data extension of
KServe and Triton): the ``Inference-Header-Content-Length`` header then gives the length of the JSON
part, inputs carrying ``parameters.binary_data_size`` take their bytes from what follows in order, and
outputs are answered as bytes when asked (``binary_data`` on an output, ``binary_data_output`` on the
request). Binary tensors are little-endian, row-major; BOOL is one byte; a BYTES element is a 4-byte
little-endian length followed by its bytes.

Every problem with a request is an ``InvalidInput`` whose message names where it is
(``inputs[1].data: ...``); the routes answer it as the protocol says: ``{"error": message}``, 400.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal, NamedTuple

import msgspec
import numpy as np
from pydantic import BaseModel, Field

from mloop_common.errors import InvalidInput
from mloop_common.jsoncodec import json_loads, json_record
from mloop_serving.host import LoadedModel

INFERENCE_HEADER = "Inference-Header-Content-Length"
EXTENSIONS = ["binary_tensor_data"]
PREDICT = "predict"
PREDICT_PROBA = "predict_proba"

Kind = Literal["bool", "int", "float", "bytes"]


@dataclass(frozen=True)
class Datatype:
    """A tensor element type: how it is checked in JSON and laid out as binary."""

    name: str
    kind: Kind
    numpy: str | None = None  # little-endian numpy dtype of the binary layout (None: BYTES, length-prefixed)
    low: int = 0
    high: int = 0


def _int(name: str, bits: int, signed: bool) -> Datatype:
    low, high = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    return Datatype(name, "int", f"<{'i' if signed else 'u'}{bits // 8}", low, high)


DATATYPES: dict[str, Datatype] = {
    t.name: t
    for t in [
        Datatype("BOOL", "bool", "|b1"),
        *(_int(f"INT{bits}", bits, True) for bits in (8, 16, 32, 64)),
        *(_int(f"UINT{bits}", bits, False) for bits in (8, 16, 32, 64)),
        Datatype("FP16", "float", "<f2"),
        Datatype("FP32", "float", "<f4"),
        Datatype("FP64", "float", "<f8"),
        Datatype("BYTES", "bytes"),
    ]
}
NUMERIC_KINDS = ("int", "float")
_FLOAT_DATATYPES = {name: datatype for name, datatype in DATATYPES.items() if datatype.kind == "float"}


class Tensor(NamedTuple):
    """One request input, its elements flat in row-major order as Python values (BYTES as text).

    A named tuple: a request makes one per feature, and a frozen dataclass took a microsecond to build."""

    name: str
    datatype: Datatype
    shape: tuple[int, ...]
    values: list[Any]


@dataclass(frozen=True)
class RequestedOutput:
    name: str
    binary: bool | None  # None: as the request's ``binary_data_output`` says


@dataclass(frozen=True)
class InferCall:
    """A checked inference request."""

    id: str | None
    inputs: list[Tensor]
    outputs: list[RequestedOutput] | None  # None: every output
    binary_output: bool


@dataclass(frozen=True)
class Encoded:
    """An inference answer as body bytes; ``json_length`` is set when binary tensors follow the JSON."""

    body: bytes
    json_length: int | None

    @property
    def headers(self) -> dict[str, str]:
        if self.json_length is None:
            return {"content-type": "application/json"}
        return {"content-type": "application/octet-stream", INFERENCE_HEADER: str(self.json_length)}


# --- reading a request -------------------------------------------------------------------


def parse_infer_request(body: bytes, json_length: str | None = None) -> InferCall:
    """``body`` as an inference request; ``json_length`` is the Inference-Header-Content-Length header, if sent."""
    if json_length is None and (plain := _plain_request(body)) is not None:
        return plain
    return _checked_request(body, json_length)


class _PlainTensor(msgspec.Struct, forbid_unknown_fields=True):
    name: Annotated[str, msgspec.Meta(min_length=1)]
    shape: list[Annotated[int, msgspec.Meta(ge=0)]]
    datatype: Literal["FP16", "FP32", "FP64"]
    data: list[int | float]  # a JSON bool is neither


class _PlainRequest(msgspec.Struct, forbid_unknown_fields=True):
    inputs: list[_PlainTensor]
    id: str | None = None


_PLAIN_REQUEST = msgspec.json.Decoder(_PlainRequest)


def _plain_request(body: bytes) -> InferCall | None:
    """The common request, read and type-checked in one pass by msgspec: JSON only, ``inputs`` and perhaps an
    ``id``, each input a floating-point tensor with a flat list of numbers and no other field. None for anything
    else (and for what msgspec reads otherwise than the json module: NaN, lone surrogates), which
    ``_checked_request`` reads, naming the problem if there is one. Reading the tensors field by field cost most of
    an inference request's CPU outside the model."""
    try:
        request = _PLAIN_REQUEST.decode(body)
    except msgspec.DecodeError:  # invalid for this shape; its ValidationError too
        return None
    tensors: list[Tensor] = []
    make = tuple.__new__  # a named tuple's own __new__ is Python code; a request makes one per feature
    for item in request.inputs:
        shape, data = item.shape, item.data
        if (shape[0] if len(shape) == 1 else math.prod(shape)) != len(data):
            return None
        tensors.append(make(Tensor, (item.name, _FLOAT_DATATYPES[item.datatype], tuple(shape), data)))
    if not tensors or len({tensor.name for tensor in tensors}) != len(tensors):
        return None
    return InferCall(id=request.id, inputs=tensors, outputs=None, binary_output=False)


def _checked_request(body: bytes, json_length: str | None) -> InferCall:
    """Any request, read field by field: the first problem is an ``InvalidInput`` naming where it is."""
    binary: bytes | None = None
    if json_length is not None:
        length = _header_length(json_length, len(body))
        body, binary = body[:length], body[length:]
    document = _json_object(body)
    request_id = document.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise InvalidInput("id: must be a string", field="id")
    parameters = _parameters(document, "parameters")
    binary_output = _flag(parameters, "binary_data_output", "parameters")
    inputs = document.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise InvalidInput("inputs: must be a non-empty list of tensors", field="inputs")
    tensors: list[Tensor] = []
    offset = 0
    for index, item in enumerate(inputs):
        tensor = _plain_input(item)
        if tensor is None:
            tensor, offset = _input(item, f"inputs[{index}]", binary, offset)
        tensors.append(tensor)
    if len({tensor.name for tensor in tensors}) != len(tensors):
        _name_twice(tensors)
    if binary is not None and offset != len(binary):
        raise InvalidInput(
            f"{len(binary) - offset} bytes of binary data after the JSON belong to no input "
            f"(inputs claim {offset} with binary_data_size)",
            field="inputs",
        )
    return InferCall(
        id=request_id, inputs=tensors, outputs=_requested_outputs(document.get("outputs")), binary_output=binary_output
    )


def _name_twice(tensors: list[Tensor]) -> None:
    names: set[str] = set()
    for index, tensor in enumerate(tensors):
        if tensor.name in names:
            raise InvalidInput(f"inputs[{index}].name: {tensor.name!r} is given twice", field=f"inputs[{index}].name")
        names.add(tensor.name)


def _header_length(value: str, body_length: int) -> int:
    if not value.strip().isdigit() or int(value) > body_length:
        raise InvalidInput(
            f"{INFERENCE_HEADER}: must be the length of the JSON part, at most the body's {body_length} bytes;"
            f" got {value!r}",
            field=INFERENCE_HEADER,
        )
    return int(value)


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        document = json_loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"request body is not valid JSON: {exc}", field="body") from exc
    if not isinstance(document, dict):
        raise InvalidInput("request body must be a JSON object", field="body")
    return document


def _parameters(container: dict[str, Any], where: str) -> dict[str, Any]:
    parameters = container.get("parameters")
    if parameters is None:
        return {}
    if not isinstance(parameters, dict):
        raise InvalidInput(f"{where}: must be an object", field=where)
    return parameters


def _flag(parameters: dict[str, Any], key: str, where: str) -> bool:
    value = parameters.get(key, False)
    if not isinstance(value, bool):
        raise InvalidInput(f"{where}.{key}: must be true or false", field=f"{where}.{key}")
    return value


def _plain_input(item: Any) -> Tensor | None:
    """The common input, checked in one pass: a JSON tensor of floating-point numbers in a flat list, and no
    other field. None for anything else, which ``_input`` checks (and names the problem of) field by field."""
    if type(item) is not dict or len(item) != 4:
        return None
    try:
        name, datatype, shape, data = item["name"], item["datatype"], item["shape"], item["data"]
    except KeyError:
        return None
    if type(name) is not str or not name or type(shape) is not list or type(data) is not list:
        return None
    kind = _FLOAT_DATATYPES.get(datatype) if type(datatype) is str else None
    if kind is None:
        return None
    if len(shape) == 1:  # the usual shape, [n]
        if type(shape[0]) is not int or shape[0] != len(data):
            return None
    else:
        count = 1
        for dimension in shape:
            if type(dimension) is not int or dimension < 0:
                return None
            count *= dimension
        if len(data) != count:
            return None
    for value in data:
        if type(value) is not float and type(value) is not int:
            return None  # nested, or not a number
    return Tensor(name, kind, tuple(shape), data)


def _input(item: Any, where: str, binary: bytes | None, offset: int) -> tuple[Tensor, int]:
    """One request input and the binary offset after it."""
    if not isinstance(item, dict):
        raise InvalidInput(f"{where}: must be an object with name, shape, datatype and data", field=where)
    name = item.get("name")
    if not isinstance(name, str) or not name:
        raise InvalidInput(f"{where}.name: must be a non-empty string", field=f"{where}.name")
    datatype = _datatype(item.get("datatype"), f"{where}.datatype")
    shape = item.get("shape")
    if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
        raise InvalidInput(f"{where}.shape: must be a list of non-negative integers", field=f"{where}.shape")
    count = math.prod(shape)
    parameters = _parameters(item, f"{where}.parameters") if "parameters" in item else {}
    if "shared_memory_region" in parameters:
        raise InvalidInput(f"{where}: shared memory is not supported; send the data", field=f"{where}.parameters")
    size = parameters.get("binary_data_size")
    if size is None:
        if "data" not in item:
            raise InvalidInput(
                f"{where}.data: missing (give data, or parameters.binary_data_size and the bytes after the JSON)",
                field=f"{where}.data",
            )
        return Tensor(name, datatype, tuple(shape), _json_values(item["data"], datatype, count, where)), offset
    if "data" in item:
        raise InvalidInput(f"{where}: give data or binary_data_size, not both", field=f"{where}.data")
    if type(size) is not int or size < 0:
        raise InvalidInput(
            f"{where}.parameters.binary_data_size: must be a non-negative integer",
            field=f"{where}.parameters.binary_data_size",
        )
    if binary is None:
        raise InvalidInput(
            f"{where}.parameters.binary_data_size: binary data needs the {INFERENCE_HEADER} header",
            field=INFERENCE_HEADER,
        )
    if offset + size > len(binary):
        raise InvalidInput(
            f"{where}.parameters.binary_data_size: {size} bytes claimed, {len(binary) - offset} left in the body",
            field=f"{where}.parameters.binary_data_size",
        )
    values = _binary_values(binary[offset : offset + size], datatype, count, where)
    return Tensor(name, datatype, tuple(shape), values), offset + size


def _datatype(value: Any, where: str) -> Datatype:
    datatype = DATATYPES.get(value) if isinstance(value, str) else None
    if datatype is None:
        raise InvalidInput(
            f"{where}: {value!r} is not a supported datatype ({', '.join(DATATYPES)})",
            field=where,
        )
    return datatype


def _flatten(data: list[Any]) -> list[Any]:
    flat: list[Any] = []
    for item in data:
        if isinstance(item, list):
            flat.extend(_flatten(item))
        else:
            flat.append(item)
    return flat


def _json_values(data: Any, datatype: Datatype, count: int, where: str) -> list[Any]:
    """``data`` (nested or flat, row-major) checked against ``datatype`` and the shape's element count."""
    if not isinstance(data, list):
        raise InvalidInput(f"{where}.data: must be a list", field=f"{where}.data")
    values = _flatten(data)
    if len(values) != count:
        raise InvalidInput(f"{where}.data: {len(values)} values for a shape of {count} elements", field=f"{where}.data")
    if datatype.kind == "float" and all(type(v) is float or type(v) is int for v in values):
        return values  # the common case, checked in one pass; otherwise find the offending value below
    for position, value in enumerate(values):
        if not _fits(value, datatype):
            raise InvalidInput(
                f"{where}.data[{position}]: {value!r} is not a valid {datatype.name} value",
                field=f"{where}.data",
            )
    return values


def _fits(value: Any, datatype: Datatype) -> bool:
    kind = type(value)
    if datatype.kind == "float":
        return kind is float or kind is int
    if datatype.kind == "int":
        return kind is int and datatype.low <= value <= datatype.high
    if datatype.kind == "bool":
        return kind is bool
    return kind is str


def _binary_values(raw: bytes, datatype: Datatype, count: int, where: str) -> list[Any]:
    if datatype.numpy is None:
        values = _bytes_elements(raw, where)
    else:
        dtype = np.dtype(datatype.numpy)
        if len(raw) != count * dtype.itemsize:
            raise InvalidInput(
                f"{where}.parameters.binary_data_size: {len(raw)} bytes for {count} {datatype.name} elements "
                f"({count * dtype.itemsize} expected)",
                field=f"{where}.parameters.binary_data_size",
            )
        if datatype.kind == "bool" and any(byte > 1 for byte in raw):
            raise InvalidInput(f"{where}: BOOL elements must be the bytes 0 or 1", field=f"{where}.data")
        values = np.frombuffer(raw, dtype=dtype).tolist()
    if len(values) != count:
        raise InvalidInput(f"{where}: {len(values)} BYTES elements for a shape of {count}", field=f"{where}.data")
    return values


def _bytes_elements(raw: bytes, where: str) -> list[str]:
    """Length-prefixed BYTES elements, as text (the models take categories as strings)."""
    values: list[str] = []
    offset = 0
    while offset < len(raw):
        if offset + 4 > len(raw):
            raise InvalidInput(f"{where}: BYTES data ends inside an element's length", field=f"{where}.data")
        (length,) = struct.unpack_from("<I", raw, offset)
        offset += 4
        if offset + length > len(raw):
            raise InvalidInput(f"{where}: a BYTES element runs past the end of its data", field=f"{where}.data")
        try:
            values.append(raw[offset : offset + length].decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise InvalidInput(
                f"{where}: BYTES element {len(values)} is not UTF-8 text", field=f"{where}.data"
            ) from exc
        offset += length
    return values


def _requested_outputs(outputs: Any) -> list[RequestedOutput] | None:
    if outputs is None:
        return None
    if not isinstance(outputs, list):
        raise InvalidInput("outputs: must be a list of {name, parameters?}", field="outputs")
    requested: list[RequestedOutput] = []
    for index, item in enumerate(outputs):
        where = f"outputs[{index}]"
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise InvalidInput(f"{where}: must be an object with a name", field=where)
        parameters = _parameters(item, f"{where}.parameters")
        if parameters.get("classification"):
            raise InvalidInput(
                f"{where}.parameters.classification: the classification extension is not supported; "
                f"ask for {PREDICT} and {PREDICT_PROBA}",
                field=f"{where}.parameters",
            )
        binary = parameters.get("binary_data")
        if binary is not None and not isinstance(binary, bool):
            raise InvalidInput(f"{where}.parameters.binary_data: must be true or false", field=f"{where}.parameters")
        requested.append(RequestedOutput(item["name"], binary))
    return requested


# --- the model's view ----------------------------------------------------------------------


def input_datatype(model: LoadedModel, feature: str) -> str:
    """What a feature is sent as: numbers as FP64, categories as BYTES."""
    return "FP64" if model.kinds.get(feature) == "numeric" else "BYTES"


def output_datatypes(model: LoadedModel) -> dict[str, str]:
    """The outputs a model answers, with their datatypes (worked out once per model: every request asks)."""
    found: dict[str, str] | None = model.derived.get("oip_outputs")
    if found is None:
        found = model.derived["oip_outputs"] = _output_datatypes(model)
    return found


def _output_datatypes(model: LoadedModel) -> dict[str, str]:
    if model.task != "classification":
        return {PREDICT: "FP64"}
    outputs = {PREDICT: datatype_of(model.classes)}
    if hasattr(model.estimator, "predict_proba"):
        outputs[PREDICT_PROBA] = "FP64"
    return outputs


def datatype_of(values: Sequence[Any]) -> str:
    if values and all(isinstance(v, bool) for v in values):
        return "BOOL"
    if values and all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return "INT64"
    if values and all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        return "FP64"
    return "BYTES"


def check_outputs(call: InferCall, model: LoadedModel) -> None:
    """Requested outputs the model does not have are a 400, before anything is scored or logged."""
    available = output_datatypes(model)
    for index, output in enumerate(call.outputs or []):
        if output.name not in available:
            raise InvalidInput(
                f"outputs[{index}].name: model {model.name!r} has no output {output.name!r} "
                f"(it has {', '.join(available)})",
                field=f"outputs[{index}].name",
            )


def instances(call: InferCall, model: LoadedModel) -> list[dict[str, Any]]:
    """Request tensors as rows of feature values.

    Either one tensor per feature (shape [n] or [n, 1], named as the feature), or a single [n, k]
    tensor with the k features in the model's order (as the metadata lists them). Numeric features
    take INT/UINT/FP tensors, categorical ones BYTES or BOOL.
    """
    rows = _rows(call, model)
    if not rows:
        raise InvalidInput("inputs: the tensors hold no rows (a shape of [0, ...]); send at least one", field="inputs")
    return rows


def _rows(call: InferCall, model: LoadedModel) -> list[dict[str, Any]]:
    features = model.features
    known, numeric = model.feature_set, model.numeric_features
    if len(call.inputs) == 1 and call.inputs[0].name not in known:
        return _matrix_rows(call.inputs[0], model)
    columns: dict[str, list[Any]] = {}
    rows = -1
    for index, tensor in enumerate(call.inputs):
        name, datatype, shape, values = tensor  # unpacked: a named tuple's fields are slower to read one by one
        if name not in known:
            raise InvalidInput(
                f"inputs[{index}].name: {name!r} is not a feature of model {model.name!r} (features: {features})",
                field=f"inputs[{index}].name",
            )
        if not (len(shape) == 1 or (len(shape) == 2 and shape[1] == 1)):
            raise InvalidInput(
                f"inputs[{index}].shape: a feature tensor has shape [n] or [n, 1], got {list(shape)}",
                field=f"inputs[{index}].shape",
            )
        if (name in numeric) != (datatype.kind in NUMERIC_KINDS):
            _check_kind(tensor, model, name, f"inputs[{index}]")
        if rows != len(values) and columns:
            raise InvalidInput(
                f"inputs[{index}].shape: all inputs must have the same number of rows", field=f"inputs[{index}].shape"
            )
        rows = len(values)
        columns[name] = values
    if len(columns) != len(features):
        missing = [f for f in features if f not in columns]
        raise InvalidInput(f"inputs: no tensor for feature(s) {missing} of model {model.name!r}", field="inputs")
    return [{name: values[row] for name, values in columns.items()} for row in range(rows)]


def _matrix_rows(tensor: Tensor, model: LoadedModel) -> list[dict[str, Any]]:
    features = model.features
    if len(tensor.shape) != 2 or tensor.shape[1] != len(features):
        raise InvalidInput(
            f"inputs[0].shape: one input not named after a feature must have shape [n, {len(features)}] "
            f"(features {features} in this order), got {list(tensor.shape)}",
            field="inputs[0].shape",
        )
    for feature in features:
        _check_kind(tensor, model, feature, "inputs[0]")
    width = len(features)
    values = tensor.values
    return [dict(zip(features, values[start : start + width], strict=True)) for start in range(0, len(values), width)]


def _check_kind(tensor: Tensor, model: LoadedModel, feature: str, where: str) -> None:
    numeric = model.kinds.get(feature) == "numeric"
    if numeric != (tensor.datatype.kind in NUMERIC_KINDS):
        wanted = "a number (INT, UINT or FP datatype)" if numeric else "a category (BYTES or BOOL datatype)"
        raise InvalidInput(
            f"{where}.datatype: feature {feature!r} is {wanted}; {tensor.datatype.name} cannot carry it",
            field=f"{where}.datatype",
        )


# --- the answer --------------------------------------------------------------------------


def encode_response(
    call: InferCall,
    model: LoadedModel,
    predictions: list[Any],
    probabilities: list[list[float]] | None,
    request_ids: list[str],
    *,
    route: str = "champion",
) -> Encoded:
    """The answer to ``call``: the outputs it asked for (default all) as JSON or binary, as it asked.

    The request's ``id`` is echoed (none is made up); the ids under which each row's prediction was
    logged (for feedback) are the ``request_ids`` parameter, and how its version was chosen ``route``.
    """
    datatypes = output_datatypes(model)
    tensors: dict[str, tuple[list[int], list[Any]]] = {PREDICT: ([len(predictions)], predictions)}
    if PREDICT_PROBA in datatypes and probabilities is not None:
        width = len(probabilities[0]) if probabilities else len(model.classes)
        tensors[PREDICT_PROBA] = ([len(probabilities), width], [p for row in probabilities for p in row])
    # (name, binary): binary None means as the request's binary_data_output says
    wanted = [(o.name, o.binary) for o in call.outputs] if call.outputs is not None else [(n, None) for n in tensors]
    outputs: list[dict[str, Any]] = []
    chunks: list[bytes] = []
    for name, binary in wanted:
        shape, data = tensors[name]
        datatype = DATATYPES[datatypes[name]]
        output: dict[str, Any] = {"name": name, "shape": shape, "datatype": datatype.name}
        if binary if binary is not None else call.binary_output:
            chunk = encode_binary(data, datatype)
            output["parameters"] = {"binary_data_size": len(chunk)}
            chunks.append(chunk)
        else:
            output["data"] = data
        outputs.append(output)
    answer: dict[str, Any] = {"model_name": model.name, "model_version": str(model.version)}
    if call.id is not None:
        answer["id"] = call.id
    answer["outputs"] = outputs
    answer["parameters"] = {"request_ids": request_ids, "route": route}
    header = json_record(answer)
    if not chunks:
        return Encoded(header, None)
    return Encoded(header + b"".join(chunks), len(header))


def encode_binary(values: Sequence[Any], datatype: Datatype) -> bytes:
    """``values`` in the binary tensor layout of ``datatype`` (a missing number is NaN)."""
    if datatype.numpy is None:
        parts = []
        for value in values:
            data = str(value).encode()
            parts.append(struct.pack("<I", len(data)))
            parts.append(data)
        return b"".join(parts)
    if datatype.kind == "float":
        values = [math.nan if v is None else v for v in values]
    return np.asarray(values, dtype=datatype.numpy).tobytes()


# --- documents of the other endpoints ------------------------------------------------------


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
    models: list[str] = Field(description="the models loaded here (not in the protocol)")


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


class ErrorBody(BaseModel):
    """How the protocol's paths answer an error."""

    error: str


class InferInputDoc(BaseModel):
    name: str
    shape: list[int]
    datatype: str = Field(description=f"one of {', '.join(DATATYPES)}")
    data: list[Any] | None = Field(None, description="row-major, flat or nested; absent for binary data")
    parameters: dict[str, Any] | None = Field(None, description="binary_data_size: bytes after the JSON")


class RequestedOutputDoc(BaseModel):
    name: str = Field(description=f"{PREDICT} or (classifiers) {PREDICT_PROBA}")
    parameters: dict[str, Any] | None = Field(None, description="binary_data: answer this output as bytes")


class InferRequestDoc(BaseModel):
    """An inference request (any content type; JSON, optionally followed by binary tensor data)."""

    id: str | None = Field(None, description="echoed in the answer")
    inputs: list[InferInputDoc]
    outputs: list[RequestedOutputDoc] | None = None
    parameters: dict[str, Any] | None = Field(None, description="binary_data_output: all outputs as bytes")


class InferOutputDoc(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    data: list[Any] | None = None
    parameters: dict[str, Any] | None = None


class InferResponseDoc(BaseModel):
    """An inference answer; ``parameters.request_ids`` are the ids to send feedback with."""

    model_name: str
    model_version: str
    id: str | None = None
    outputs: list[InferOutputDoc]
    parameters: dict[str, Any]


def model_metadata(model: LoadedModel) -> ModelMetadata:
    """A loaded model as OIP metadata: one input per feature, ``predict`` (and ``predict_proba``) outputs."""
    shapes = {PREDICT: [-1], PREDICT_PROBA: [-1, len(model.classes)]}
    return ModelMetadata(
        name=model.name,
        versions=[str(model.version)],
        platform="sklearn",
        inputs=[TensorMetadata(name=f, datatype=input_datatype(model, f), shape=[-1]) for f in model.features],
        outputs=[
            TensorMetadata(name=name, datatype=datatype, shape=shapes[name])
            for name, datatype in output_datatypes(model).items()
        ],
    )
