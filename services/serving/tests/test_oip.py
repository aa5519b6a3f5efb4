"""Open Inference Protocol v2 bodies read, checked and answered (no app started).

Binary bodies are made and read by Triton's client library (its public request/response codecs), so the
wire format is checked against an independent implementation rather than against our own encoder.
"""

from __future__ import annotations

import json
import math
import struct
from typing import Any

import numpy as np
import pytest
from sklearn.dummy import DummyRegressor
from sklearn.linear_model import LogisticRegression
from tritonclient.http import InferenceServerClient, InferInput, InferRequestedOutput
from tritonclient.utils import serialize_byte_tensor

from mloop_common.errors import InvalidInput
from mloop_serving import oip
from mloop_serving.host import LoadedModel
from mloop_serving.oip import DATATYPES, InferCall, RequestedOutput, Tensor, parse_infer_request


def model(features=("usage", "calls", "plan"), task="classification", classes=("no", "yes"), estimator=None):
    return LoadedModel(
        name="churn",
        version=3,
        task=task,
        features=list(features),
        kinds={"usage": "numeric", "calls": "numeric", "plan": "categorical", "region": "categorical"},
        estimator=estimator if estimator is not None else LogisticRegression(),
        classes=list(classes),
    )


def body(document: dict[str, Any]) -> bytes:
    return json.dumps(document).encode()


def json_input(name: str, shape: list[int], data: Any, datatype: str = "FP64") -> dict[str, Any]:
    return {"name": name, "shape": shape, "datatype": datatype, "data": data}


def parse(*inputs: dict[str, Any], **extra: Any) -> InferCall:
    return parse_infer_request(body({"inputs": list(inputs), **extra}))


def triton_request(*tensors: tuple[str, np.ndarray, str], binary: bool = True, **options: Any) -> tuple[bytes, str]:
    """A request body as Triton's client builds it, and its Inference-Header-Content-Length."""
    inputs = []
    for name, array, datatype in tensors:
        tensor = InferInput(name, list(array.shape), datatype)
        tensor.set_data_from_numpy(array, binary_data=binary)
        inputs.append(tensor)
    request, json_size = InferenceServerClient.generate_request_body(inputs, **options)
    return request, str(json_size if json_size is not None else len(request))


def refused(body_bytes: bytes, header: str | None = None) -> str:
    with pytest.raises(InvalidInput) as caught:
        parse_infer_request(body_bytes, header)
    return caught.value.message


# --- reading requests ------------------------------------------------------------------------


def test_json_request_keeps_its_id_and_flattens_nested_data_row_major():
    call = parse(
        json_input("usage", [2, 1], [[1.5], [2.5]]),
        json_input("plan", [2], ["pro", "basic"], "BYTES"),
        id="client-7",
        outputs=[{"name": "predict"}],
    )

    assert call.id == "client-7"
    assert [(t.name, t.datatype.name, t.shape, t.values) for t in call.inputs] == [
        ("usage", "FP64", (2, 1), [1.5, 2.5]),
        ("plan", "BYTES", (2,), ["pro", "basic"]),
    ]
    assert call.outputs == [RequestedOutput("predict", None)] and call.binary_output is False


def test_a_request_without_id_has_none():
    assert parse(json_input("usage", [1], [1.0])).id is None


@pytest.mark.parametrize(
    ("datatype", "array"),
    [
        ("BOOL", np.array([True, False, True])),
        ("INT8", np.array([-128, 0, 127], dtype=np.int8)),
        ("INT16", np.array([-32768, 1, 32767], dtype=np.int16)),
        ("INT32", np.array([-(2**31), 2, 2**31 - 1], dtype=np.int32)),
        ("INT64", np.array([-(2**63), 3, 2**63 - 1], dtype=np.int64)),
        ("UINT8", np.array([0, 1, 255], dtype=np.uint8)),
        ("UINT16", np.array([0, 1, 65535], dtype=np.uint16)),
        ("UINT32", np.array([0, 1, 2**32 - 1], dtype=np.uint32)),
        ("UINT64", np.array([0, 1, 2**64 - 1], dtype=np.uint64)),
        ("FP16", np.array([0.5, -1.25, 2.0], dtype=np.float16)),
        ("FP32", np.array([0.5, -1.25, 3.0e38], dtype=np.float32)),
        ("FP64", np.array([0.1, -1.25, 1e300])),
        ("BYTES", np.array(["pro", "", "ünï"], dtype=np.object_)),
    ],
)
def test_every_datatype_reads_the_same_from_binary_and_from_json(datatype, array):
    binary_body, header = triton_request(("x", array, datatype))
    json_body, _ = triton_request(("x", array, datatype), binary=False) if datatype != "FP16" else (None, None)

    from_binary = parse_infer_request(binary_body, header).inputs[0]

    expected = array.tolist()
    assert from_binary.datatype.name == datatype and from_binary.shape == (3,)
    assert from_binary.values == expected
    if json_body is not None:
        assert parse_infer_request(json_body).inputs[0].values == expected


def test_binary_inputs_take_their_bytes_in_input_order_and_json_inputs_may_sit_between():
    usage = np.array([1.5, 2.5])
    plan = serialize_byte_tensor(np.array([b"pro", b"basic"], dtype=np.object_)).item()
    header = body(
        {
            "inputs": [
                {"name": "usage", "shape": [2], "datatype": "FP64", "parameters": {"binary_data_size": 16}},
                json_input("calls", [2], [3, 4], "INT64"),
                {"name": "plan", "shape": [2], "datatype": "BYTES", "parameters": {"binary_data_size": len(plan)}},
            ]
        }
    )

    call = parse_infer_request(header + usage.tobytes() + plan, str(len(header)))

    assert [t.values for t in call.inputs] == [[1.5, 2.5], [3, 4], ["pro", "basic"]]


@pytest.mark.parametrize(
    ("datatype", "value"),
    [
        ("BOOL", 1),
        ("BOOL", "true"),
        ("INT8", 128),
        ("INT8", 1.0),
        ("INT16", -32769),
        ("INT32", True),
        ("INT64", 2**63),
        ("UINT8", -1),
        ("UINT16", 65536),
        ("UINT64", 2**64),
        ("FP32", "1.5"),
        ("FP64", True),
        ("FP64", None),
        ("BYTES", 3),
        ("BYTES", None),
    ],
)
def test_json_values_that_do_not_fit_their_datatype_are_refused_naming_the_element(datatype, value):
    message = refused(body({"inputs": [json_input("x", [2], [DATATYPES_OK[datatype], value], datatype)]}))

    assert message == f"inputs[0].data[1]: {value!r} is not a valid {datatype} value"


DATATYPES_OK = {
    "BOOL": True,
    "INT8": 1,
    "INT16": 1,
    "INT32": 1,
    "INT64": 1,
    "UINT8": 1,
    "UINT16": 1,
    "UINT64": 1,
    "FP32": 1.5,
    "FP64": 2,
    "BYTES": "a",
}


def test_an_unknown_datatype_is_refused_listing_the_supported_ones():
    message = refused(body({"inputs": [json_input("x", [1], [1.0], "BF16")]}))

    assert message.startswith("inputs[0].datatype: 'BF16' is not a supported datatype (BOOL, INT8")
    assert set(DATATYPES) == {
        "BOOL",
        *(f"{s}INT{b}" for s in ("", "U") for b in (8, 16, 32, 64)),
        "FP16",
        "FP32",
        "FP64",
        "BYTES",
    }


@pytest.mark.parametrize(
    ("shape", "data", "message"),
    [
        ([2, 2], [1.0, 2.0, 3.0], "inputs[0].data: 3 values for a shape of 4 elements"),
        ([], [1.0, 2.0], "inputs[0].data: 2 values for a shape of 1 elements"),
        ([2, -1], [1.0, 2.0], "inputs[0].shape: must be a list of non-negative integers"),
        ("2", [1.0, 2.0], "inputs[0].shape: must be a list of non-negative integers"),
        ([2], 1.0, "inputs[0].data: must be a list"),
    ],
)
def test_shapes_and_data_that_disagree_are_refused(shape, data, message):
    assert refused(body({"inputs": [json_input("x", shape, data)]})) == message


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"inputs": []}, "inputs: must be a non-empty list of tensors"),
        ({}, "inputs: must be a non-empty list of tensors"),
        ({"inputs": [1]}, "inputs[0]: must be an object with name, shape, datatype and data"),
        ({"inputs": [{"shape": [1], "datatype": "FP64", "data": [1]}]}, "inputs[0].name: must be a non-empty string"),
        ({"inputs": [{"name": "x", "shape": [1], "datatype": "FP64"}]}, "inputs[0].data: missing"),
        (
            {"inputs": [json_input("x", [1], [1.0]), json_input("x", [1], [2.0])]},
            "inputs[1].name: 'x' is given twice",
        ),
        ({"id": 7, "inputs": [json_input("x", [1], [1.0])]}, "id: must be a string"),
        ({"inputs": [json_input("x", [1], [1.0])], "parameters": []}, "parameters: must be an object"),
        (
            {"inputs": [json_input("x", [1], [1.0])], "parameters": {"binary_data_output": "yes"}},
            "parameters.binary_data_output: must be true or false",
        ),
        ({"inputs": [json_input("x", [1], [1.0])], "outputs": {"name": "predict"}}, "outputs: must be a list"),
        ({"inputs": [json_input("x", [1], [1.0])], "outputs": [{"binary_data": True}]}, "outputs[0]: must be an"),
        (
            {"inputs": [json_input("x", [1], [1.0])], "outputs": [{"name": "p", "parameters": {"classification": 2}}]},
            "outputs[0].parameters.classification: the classification extension is not supported",
        ),
        (
            {"inputs": [json_input("x", [1], [1.0])], "outputs": [{"name": "p", "parameters": {"binary_data": 1}}]},
            "outputs[0].parameters.binary_data: must be true or false",
        ),
        (
            {"inputs": [{"name": "x", "shape": [1], "datatype": "FP64", "parameters": {"shared_memory_region": "r"}}]},
            "inputs[0]: shared memory is not supported",
        ),
    ],
)
def test_malformed_requests_are_refused_naming_the_place(document, message):
    assert refused(body(document)).startswith(message)


@pytest.mark.parametrize("raw", [b"", b"{", b"[1, 2]", b"\xff\xfe", b'"inputs"'])
def test_a_body_that_is_not_a_json_object_is_refused(raw):
    assert refused(raw).startswith("request body ")


def binary_request(parameters: dict[str, Any], tensor: bytes, datatype: str = "FP64", shape=(2,)) -> tuple[bytes, str]:
    header = body({"inputs": [{"name": "x", "shape": list(shape), "datatype": datatype, "parameters": parameters}]})
    return header + tensor, str(len(header))


@pytest.mark.parametrize(
    ("parameters", "tensor", "datatype", "message"),
    [
        ({"binary_data_size": 12}, b"\0" * 12, "FP64", "inputs[0].parameters.binary_data_size: 12 bytes for 2 FP64"),
        ({"binary_data_size": 16}, b"\0" * 8, "FP64", "inputs[0].parameters.binary_data_size: 16 bytes claimed, 8"),
        ({"binary_data_size": 16}, b"\0" * 24, "FP64", "8 bytes of binary data after the JSON belong to no input"),
        ({"binary_data_size": -1}, b"", "FP64", "inputs[0].parameters.binary_data_size: must be a non-negative"),
        ({"binary_data_size": 2}, b"\x01\x02", "BOOL", "inputs[0]: BOOL elements must be the bytes 0 or 1"),
        ({"binary_data_size": 6}, struct.pack("<I", 5) + b"ab", "BYTES", "inputs[0]: a BYTES element runs past"),
        ({"binary_data_size": 7}, struct.pack("<I", 1) + b"a" + b"\0\0", "BYTES", "inputs[0]: BYTES data ends inside"),
        ({"binary_data_size": 5}, struct.pack("<I", 1) + b"\xff", "BYTES", "inputs[0]: BYTES element 0 is not UTF-8"),
        ({"binary_data_size": 5}, struct.pack("<I", 1) + b"a", "BYTES", "inputs[0]: 1 BYTES elements for a shape of 2"),
    ],
)
def test_binary_data_that_does_not_match_its_description_is_refused(parameters, tensor, datatype, message):
    assert refused(*binary_request(parameters, tensor, datatype)).startswith(message)


def test_binary_data_size_without_the_header_is_refused():
    raw, _ = binary_request({"binary_data_size": 16}, b"")

    assert (
        refused(raw)
        == "inputs[0].parameters.binary_data_size: binary data needs the Inference-Header-Content-Length header"
    )


def test_data_and_binary_data_size_together_are_refused():
    header = body({"inputs": [{**json_input("x", [1], [1.0]), "parameters": {"binary_data_size": 8}}]})

    assert refused(header + b"\0" * 8, str(len(header))) == "inputs[0]: give data or binary_data_size, not both"


@pytest.mark.parametrize("value", ["abc", "-1", "1000", ""])
def test_an_inference_header_length_that_is_not_within_the_body_is_refused(value):
    assert refused(body({"inputs": [json_input("x", [1], [1.0])]}), value).startswith(
        "Inference-Header-Content-Length:"
    )


def test_a_header_length_covering_the_whole_body_is_a_plain_json_request():
    raw = body({"inputs": [json_input("x", [1], [1.0])]})

    assert parse_infer_request(raw, str(len(raw))).inputs[0].values == [1.0]


# --- tensors as the model's rows ----------------------------------------------------------------


def tensors(*items: tuple[str, str, tuple[int, ...], list[Any]], outputs=None, binary=False, id=None) -> InferCall:
    return InferCall(
        id=id,
        inputs=[Tensor(name, DATATYPES[datatype], shape, values) for name, datatype, shape, values in items],
        outputs=outputs,
        binary_output=binary,
    )


def test_one_tensor_per_feature_gives_one_instance_per_row_whatever_the_numeric_datatype():
    rows = oip.instances(
        tensors(
            ("plan", "BYTES", (2,), ["pro", "basic"]),
            ("usage", "FP32", (2, 1), [1.5, 2.5]),
            ("calls", "UINT8", (2,), [3, 4]),
        ),
        model(),
    )

    assert rows == [{"plan": "pro", "usage": 1.5, "calls": 3}, {"plan": "basic", "usage": 2.5, "calls": 4}]


def test_a_single_n_by_k_tensor_is_read_in_the_models_feature_order():
    rows = oip.instances(tensors(("input-0", "FP64", (2, 2), [1.5, 3, 2.5, 4])), model(("usage", "calls")))

    assert rows == [{"usage": 1.5, "calls": 3}, {"usage": 2.5, "calls": 4}]


@pytest.mark.parametrize(
    ("call", "features"),
    [
        (
            tensors(
                ("plan", "BYTES", (2,), ["pro", "basic"]),
                ("usage", "FP32", (2, 1), [1.5, 2]),
                ("calls", "INT64", (2,), [3, -(2**40)]),
            ),
            ("usage", "calls", "plan"),
        ),
        (tensors(("input-0", "FP64", (2, 2), [1.5, 3, 2.5, 4])), ("usage", "calls")),
        (tensors(("calls", "UINT64", (1,), [2**64 - 1]), ("usage", "FP16", (1,), [0.5])), ("usage", "calls")),
    ],
)
def test_rows_of_accepted_tensors_need_no_second_check(call, features):
    """Serving skips the simple API's per-value check for the protocol's tensors: whatever the protocol accepts, the
    check would have passed and given the same rows."""
    served = model(features)
    instances = oip.instances(call, served)

    assert served.checked_rows(instances) == served.rows(instances)


@pytest.mark.parametrize(
    "call",
    [
        tensors(("input-0", "FP64", (0, 2), [])),
        tensors(("usage", "FP64", (0,), []), ("calls", "FP64", (0,), [])),
    ],
)
def test_tensors_without_rows_are_refused_not_scored(call):
    with pytest.raises(InvalidInput, match="hold no rows") as caught:
        oip.instances(call, model(("usage", "calls")))

    assert caught.value.field == "inputs"


@pytest.mark.parametrize("shape", [(3, 2), (6,), (1, 2, 3)])
def test_a_single_tensor_of_the_wrong_width_is_refused(shape):
    with pytest.raises(InvalidInput, match=r"must have shape \[n, 3\]") as caught:
        oip.instances(tensors(("input-0", "FP64", shape, [1.0] * 6)), model())

    assert caught.value.field == "inputs[0].shape"


def test_a_single_numeric_tensor_cannot_carry_a_categorical_feature():
    with pytest.raises(InvalidInput, match=r"feature 'plan' is a category \(BYTES or BOOL datatype\); FP64 cannot"):
        oip.instances(tensors(("input-0", "FP64", (1, 3), [1.0, 2.0, 3.0])), model())


@pytest.mark.parametrize(
    ("items", "message"),
    [
        (
            [("usage", "BYTES", (1,), ["1.5"]), ("calls", "FP64", (1,), [1.0]), ("plan", "BYTES", (1,), ["pro"])],
            "inputs[0].datatype: feature 'usage' is a number (INT, UINT or FP datatype); BYTES cannot carry it",
        ),
        (
            [("usage", "FP64", (1,), [1.5]), ("calls", "FP64", (1,), [1.0]), ("plan", "INT64", (1,), [2])],
            "inputs[2].datatype: feature 'plan' is a category (BYTES or BOOL datatype); INT64 cannot carry it",
        ),
        (
            [("usage", "FP64", (1,), [1.5]), ("calls", "FP64", (1,), [1.0])],
            "inputs: no tensor for feature(s) ['plan'] of model 'churn'",
        ),
        (
            [("usage", "FP64", (1,), [1.5]), ("calls", "FP64", (2,), [1.0, 2.0])],
            "inputs[1].shape: all inputs must have the same number of rows",
        ),
        (
            [("usage", "FP64", (2, 2), [1.5] * 4), ("calls", "FP64", (2, 2), [1.0] * 4)],
            "inputs[0].shape: a feature tensor has shape [n] or [n, 1], got [2, 2]",
        ),
        (
            [("usage", "FP64", (), [1.5]), ("calls", "FP64", (1,), [1.0])],
            "inputs[0].shape: a feature tensor has shape [n] or [n, 1], got []",
        ),
        (
            [("usage", "FP64", (1,), [1.5]), ("customer", "BYTES", (1,), ["c-1"])],
            "inputs[1].name: 'customer' is not a feature of model 'churn'",
        ),
    ],
)
def test_tensors_that_do_not_fit_the_model_are_refused(items, message):
    with pytest.raises(InvalidInput) as caught:
        oip.instances(tensors(*items), model())

    assert caught.value.message.startswith(message)


def test_an_output_the_model_does_not_have_is_refused_before_scoring():
    call = tensors(
        ("usage", "FP64", (1,), [1.0]), outputs=[RequestedOutput("predict", None), RequestedOutput("p", None)]
    )

    with pytest.raises(InvalidInput, match=r"outputs\[1\].name: model 'churn' has no output 'p' \(it has predict, pre"):
        oip.check_outputs(call, model())
    with pytest.raises(InvalidInput, match="has no output 'predict_proba'"):
        oip.check_outputs(
            tensors(outputs=[RequestedOutput("predict_proba", None)]), model(task="regression", classes=())
        )


# --- answers ---------------------------------------------------------------------------------


PROBABILITIES = [[0.25, 0.75], [0.9, 0.1]]


def answer(call: InferCall, served: LoadedModel | None = None) -> tuple[oip.Encoded, Any]:
    """Our encoding of an answer to ``call``, and Triton's client's reading of it."""
    encoded = oip.encode_response(call, served or model(), ["yes", "no"], PROBABILITIES, ["r-1", "r-2"])
    return encoded, InferenceServerClient.parse_response_body(encoded.body, header_length=encoded.json_length)


def test_a_json_answer_echoes_the_request_id_and_lists_every_output():
    encoded, result = answer(tensors(id="client-7"))

    assert encoded.json_length is None and encoded.headers == {"content-type": "application/json"}
    assert json.loads(encoded.body) == {
        "model_name": "churn",
        "model_version": "3",
        "id": "client-7",
        "outputs": [
            {"name": "predict", "shape": [2], "datatype": "BYTES", "data": ["yes", "no"]},
            {"name": "predict_proba", "shape": [2, 2], "datatype": "FP64", "data": [0.25, 0.75, 0.9, 0.1]},
        ],
        "parameters": {"request_ids": ["r-1", "r-2"], "route": "champion"},
    }
    assert result.as_numpy("predict_proba").tolist() == PROBABILITIES


def test_an_answer_to_a_request_without_id_has_none():
    encoded, _ = answer(tensors())

    assert "id" not in json.loads(encoded.body)


def test_binary_data_output_answers_every_output_as_bytes_after_the_json():
    encoded, result = answer(tensors(binary=True))

    header = json.loads(encoded.body[: encoded.json_length])
    assert encoded.headers == {
        "content-type": "application/octet-stream",
        "Inference-Header-Content-Length": str(encoded.json_length),
    }
    assert [o.get("data") for o in header["outputs"]] == [None, None]
    assert [o["parameters"]["binary_data_size"] for o in header["outputs"]] == [2 * 4 + 3 + 2, 4 * 8]
    assert result.as_numpy("predict").tolist() == [b"yes", b"no"]
    assert result.as_numpy("predict_proba").tolist() == PROBABILITIES


def test_each_output_may_override_the_request_binary_setting_and_outputs_come_in_the_order_asked():
    call = tensors(binary=True, outputs=[RequestedOutput("predict_proba", None), RequestedOutput("predict", False)])

    encoded, result = answer(call)

    header = json.loads(encoded.body[: encoded.json_length])
    assert [o["name"] for o in header["outputs"]] == ["predict_proba", "predict"]
    assert header["outputs"][1]["data"] == ["yes", "no"]
    assert result.as_numpy("predict_proba").tolist() == PROBABILITIES


def test_only_the_outputs_asked_for_are_answered():
    encoded, _ = answer(tensors(outputs=[RequestedOutput("predict", None)]))

    assert [o["name"] for o in json.loads(encoded.body)["outputs"]] == ["predict"]


@pytest.mark.parametrize(("classes", "datatype"), [((0, 1), "INT64"), ((False, True), "BOOL"), ((0.5, 1.5), "FP64")])
def test_predictions_carry_the_datatype_of_the_classes_in_json_and_binary(classes, datatype):
    served = model(classes=classes)
    call = tensors(outputs=[RequestedOutput("predict", True), RequestedOutput("predict", False)])

    encoded = oip.encode_response(call, served, list(classes), None, ["r-1", "r-2"])
    result = InferenceServerClient.parse_response_body(encoded.body, header_length=encoded.json_length)

    header = json.loads(encoded.body[: encoded.json_length])
    assert [o["datatype"] for o in header["outputs"]] == [datatype, datatype]
    assert header["outputs"][1]["data"] == list(classes)
    assert result.as_numpy("predict").tolist() == list(classes)


def test_a_regressors_missing_prediction_is_null_in_json_and_nan_in_binary():
    served = model(task="regression", classes=(), estimator=DummyRegressor())
    call = tensors(outputs=[RequestedOutput("predict", True)])

    encoded = oip.encode_response(call, served, [1.5, None], None, ["r-1", "r-2"])
    as_json = oip.encode_response(tensors(), served, [1.5, None], None, ["r-1", "r-2"])

    values = np.frombuffer(encoded.body[encoded.json_length :], dtype="<f8")
    assert values[0] == 1.5 and math.isnan(values[1])
    assert json.loads(as_json.body)["outputs"] == [
        {"name": "predict", "shape": [2], "datatype": "FP64", "data": [1.5, None]}
    ]


def test_metadata_lists_features_as_inputs_and_the_outputs_a_request_may_ask_for():
    metadata = oip.model_metadata(model())

    assert [(i.name, i.datatype, i.shape) for i in metadata.inputs] == [
        ("usage", "FP64", [-1]),
        ("calls", "FP64", [-1]),
        ("plan", "BYTES", [-1]),
    ]
    assert [(o.name, o.datatype, o.shape) for o in metadata.outputs] == [
        ("predict", "BYTES", [-1]),
        ("predict_proba", "FP64", [-1, 2]),
    ]
    assert metadata.versions == ["3"]


def test_a_json_request_made_by_triton_client_with_binary_outputs_asked_parses():
    raw, header = triton_request(
        ("usage", np.array([[1.5], [2.5]]), "FP64"),
        binary=False,
        outputs=[
            InferRequestedOutput("predict", binary_data=True),
            InferRequestedOutput("predict_proba", binary_data=False),
        ],
        request_id="t-1",
    )

    call = parse_infer_request(raw, header)

    assert call.id == "t-1" and call.inputs[0].values == [1.5, 2.5]
    assert call.outputs == [RequestedOutput("predict", True), RequestedOutput("predict_proba", False)]


GOOD = {"name": "usage", "shape": [2, 1], "datatype": "FP32", "data": [1.5, 2]}
# (tensor, whether the one-pass check takes it)
TENSOR_VARIANTS: list[tuple[Any, bool]] = [
    (GOOD, True),
    ({**GOOD, "shape": [2]}, True),
    ({**GOOD, "shape": [1, 2]}, True),
    ({**GOOD, "datatype": "FP64", "data": [1.5, float("nan")]}, True),
    ({**GOOD, "datatype": "FP16"}, True),
    ({**GOOD, "data": [[1.5], [2.0]]}, False),  # nested
    ({**GOOD, "data": [1.5]}, False),  # too few values
    ({**GOOD, "data": [1.5, True]}, False),  # a bool is no number here
    ({**GOOD, "data": [1.5, "2"]}, False),
    ({**GOOD, "data": [1.5, None]}, False),
    ({**GOOD, "data": 1.5}, False),
    ({**GOOD, "shape": [2, -1]}, False),
    ({**GOOD, "shape": [2, True]}, False),
    ({**GOOD, "shape": "2"}, False),
    ({**GOOD, "datatype": "INT64", "data": [1, 2]}, False),
    ({**GOOD, "datatype": "BYTES", "data": ["a", "b"]}, False),
    ({**GOOD, "datatype": "fp32"}, False),
    ({**GOOD, "datatype": ["FP32"]}, False),
    ({**GOOD, "name": ""}, False),
    ({**GOOD, "name": 7}, False),
    ({**GOOD, "parameters": {}}, False),
    ({**GOOD, "extra": 1}, False),
    ({key: value for key, value in GOOD.items() if key != "data"}, False),
    ({key: value for key, value in GOOD.items() if key != "shape"}, False),
    ([GOOD], False),
]


@pytest.mark.parametrize(("item", "common"), TENSOR_VARIANTS)
def test_the_one_pass_check_of_common_tensors_agrees_with_the_full_check(item: Any, common: bool) -> None:
    """Common tensors take a one-pass check; whatever it takes must read as the full check reads it, and whatever
    it passes over must still be read (or refused, naming the field) by the full check."""
    quick = oip._plain_input(item)
    try:
        full: Tensor | InvalidInput = oip._input(item, "inputs[0]", None, 0)[0]
    except InvalidInput as exc:
        full = exc

    assert (quick is not None) == common
    if quick is not None:
        assert quick == full
    elif isinstance(full, InvalidInput):
        assert "inputs[0]" in str(full)


TWO = [GOOD, {**GOOD, "name": "calls", "datatype": "FP64", "data": [3, 2**70]}]
# (request body, whether the one-pass read takes it)
REQUEST_VARIANTS: list[tuple[bytes, bool]] = [
    *((json.dumps({"inputs": [item]}).encode(), common and "nan" not in str(item)) for item, common in TENSOR_VARIANTS),
    (json.dumps({"inputs": TWO}).encode(), True),
    (json.dumps({"id": "r-1", "inputs": TWO}).encode(), True),
    (json.dumps({"inputs": TWO, "id": None}).encode(), True),
    (b' {\n "inputs" : [ {"data": [1.5], "datatype": "FP64", "shape": [1], "name": "usage"} ] } ', True),
    (json.dumps({"id": 7, "inputs": TWO}).encode(), False),
    (json.dumps({"inputs": TWO, "parameters": {"binary_data_output": True}}).encode(), False),
    (json.dumps({"inputs": TWO, "outputs": [{"name": "predict"}]}).encode(), False),
    (json.dumps({"inputs": [GOOD, GOOD]}).encode(), False),  # a name twice
    (json.dumps({"inputs": []}).encode(), False),
    (json.dumps({"inputs": TWO, "extra": 1}).encode(), False),
    (b'{"inputs": [{"name": "\\ud800", "shape": [1], "datatype": "FP64", "data": [1.5]}]}', False),
    (b'{"inputs": [{"name": "usage", "shape": [1], "datatype": "FP64", "data": [1e400]}]}', False),
    (b'{"inputs": [{"name": "usage", "name": "calls", "shape": [1], "datatype": "FP64", "data": [1]}]}', True),
    (b'{"inputs": [', False),
    (b"[]", False),
    (b"", False),
]


@pytest.mark.parametrize(("body", "common"), REQUEST_VARIANTS)
def test_the_one_pass_read_of_common_requests_agrees_with_the_full_read(body: bytes, common: bool) -> None:
    """Common requests are read in one pass (msgspec); whatever it takes must read as the full, field-by-field read
    does (the json module's values: integers past 64 bits exact, a repeated key's last value), and whatever it passes
    over must still be read (or refused, naming the field) by the full read."""
    quick = oip._plain_request(body)
    try:
        full: InferCall | InvalidInput = oip._checked_request(body, None)
    except InvalidInput as exc:
        full = exc

    assert (quick is not None) == common
    if quick is not None:
        assert quick == full
        assert [[type(v) for v in t.values] for t in quick.inputs] == [[type(v) for v in t.values] for t in full.inputs]
        assert parse_infer_request(body) == quick
    elif isinstance(full, InvalidInput):
        with pytest.raises(InvalidInput) as refused:
            parse_infer_request(body)
        assert str(refused.value) == str(full)
    else:
        assert parse_infer_request(body) == full
