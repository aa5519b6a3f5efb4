"""Open Inference Protocol v2 request tensors turned into instances (no app started)."""

import pytest

from mloop_common.errors import InvalidInput
from mloop_serving.host import LoadedModel
from mloop_serving.oip import InferInput, InferRequest, oip_instances


def model(features=("usage", "calls", "plan")):
    return LoadedModel(
        name="churn",
        version=1,
        task="classification",
        features=list(features),
        kinds={"usage": "numeric", "calls": "numeric", "plan": "categorical"},
        estimator=None,
    )


def tensor(name, shape, data, datatype="FP64"):
    return InferInput(name=name, shape=shape, datatype=datatype, data=data)


def request(*tensors):
    return InferRequest(inputs=list(tensors))


def test_one_tensor_per_feature_gives_one_instance_per_row():
    instances = oip_instances(
        request(
            tensor("usage", [2], [1.5, 2.5]),
            tensor("calls", [2], [3, 4], "INT64"),
            tensor("plan", [2], ["pro", "basic"], "BYTES"),
        ),
        model(),
    )

    assert instances == [{"usage": 1.5, "calls": 3, "plan": "pro"}, {"usage": 2.5, "calls": 4, "plan": "basic"}]


def test_column_tensors_of_shape_n_by_1_are_accepted():
    instances = oip_instances(
        request(
            tensor("usage", [2, 1], [[1.5], [2.5]]),
            tensor("calls", [2, 1], [3, 4]),
            tensor("plan", [2, 1], [["pro"], ["basic"]], "BYTES"),
        ),
        model(),
    )

    assert instances == [{"usage": 1.5, "calls": 3, "plan": "pro"}, {"usage": 2.5, "calls": 4, "plan": "basic"}]


def test_single_matrix_tensor_is_read_in_feature_order():
    instances = oip_instances(request(tensor("input-0", [2, 2], [[1.5, 3], [2.5, 4]])), model(("usage", "calls")))

    assert instances == [{"usage": 1.5, "calls": 3}, {"usage": 2.5, "calls": 4}]


def test_single_matrix_tensor_may_be_sent_flat():
    instances = oip_instances(request(tensor("input-0", [2, 2], [1.5, 3, 2.5, 4])), model(("usage", "calls")))

    assert instances == [{"usage": 1.5, "calls": 3}, {"usage": 2.5, "calls": 4}]


def test_feature_tensor_that_the_model_lacks_reaches_the_model_as_a_missing_feature():
    instances = oip_instances(request(tensor("usage", [1], [1.5]), tensor("calls", [1], [3])), model())

    with pytest.raises(InvalidInput) as caught:
        model().frame(instances)
    assert caught.value.field == "instances[0].plan"


@pytest.mark.parametrize("shape", [[2, 3], [2], [2, 2, 1], [6]])
def test_matrix_tensor_of_the_wrong_width_is_invalid(shape):
    with pytest.raises(InvalidInput, match=r"must have shape \[n, 2\]") as caught:
        oip_instances(request(tensor("input-0", shape, [1, 2, 3, 4, 5, 6])), model(("usage", "calls")))

    assert caught.value.field == "inputs[0].shape"


def test_matrix_tensor_with_too_few_values_is_invalid():
    with pytest.raises(InvalidInput, match="data length does not match shape") as caught:
        oip_instances(request(tensor("input-0", [3, 2], [1, 2, 3, 4])), model(("usage", "calls")))

    assert caught.value.field == "inputs[0].data"


def test_feature_tensor_whose_shape_disagrees_with_its_data_is_invalid():
    with pytest.raises(InvalidInput, match=r"'calls': shape \[3\] does not match 2 values") as caught:
        oip_instances(request(tensor("usage", [2], [1.5, 2.5]), tensor("calls", [3], [3, 4])), model())

    assert caught.value.field == "inputs[1].shape"


def test_feature_tensor_without_a_shape_is_invalid():
    with pytest.raises(InvalidInput) as caught:
        oip_instances(request(tensor("usage", [], [1.5]), tensor("calls", [1], [3])), model())

    assert caught.value.field == "inputs[0].shape"


def test_feature_tensors_with_different_row_counts_are_invalid():
    with pytest.raises(InvalidInput, match="same number of rows") as caught:
        oip_instances(request(tensor("usage", [2], [1.5, 2.5]), tensor("calls", [1], [3])), model())

    assert caught.value.field == "inputs"


def test_feature_tensor_wider_than_one_column_is_invalid():
    with pytest.raises(InvalidInput) as caught:
        oip_instances(
            request(tensor("usage", [2, 2], [1.5, 2.5]), tensor("calls", [2, 2], [3, 4])), model(("usage", "calls"))
        )

    assert caught.value.field == "inputs[0].shape"
