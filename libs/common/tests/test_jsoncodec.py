"""Events and JSON columns go through orjson for speed, and read back exactly what the json module would give."""

import json
from datetime import UTC, datetime
from pathlib import PurePosixPath
from typing import Any

import orjson
import pytest

from mloop_common.jsoncodec import json_dumps, json_loads, json_record

VALUES: list[Any] = [
    {"age": 41, "income": 52_000.5, "city": "Zürich", "tags": ["a", None, True]},
    [0.1, 0.2, 0.7],
    {"big": 12_345_678_901_234_567_890_123, "small": -(2**63)},
    10**30,
    {"nested": {"deep": [{"x": 1e-300}, {"y": -0.0}]}},
    "line\u2028separator and \u00e9",
]


@pytest.mark.parametrize("value", VALUES)
def test_a_value_reads_back_as_the_json_module_would_give_it(value: Any) -> None:
    assert json_loads(json_dumps(value)) == json.loads(json.dumps(value))


def test_integers_beyond_64_bits_stay_exact_both_ways() -> None:
    text = json_dumps({"id": 2**70 + 1})

    assert json_loads(text)["id"] == 2**70 + 1
    assert json_loads('{"id": 1180591620717411303425}')["id"] == 1180591620717411303425


@pytest.mark.parametrize(
    "number", [2**63 - 1, -(2**63), 2**64 - 1, 2**64, -(2**63) - 1, 2**70 + 1, 10**18, 123_456_789_012_345_678]
)
def test_integers_read_from_bytes_are_exact_at_and_beyond_64_bits(number: int) -> None:
    document = json_loads(f'{{"inputs": [{{"data": [{number}, 0.5]}}]}}'.encode())

    value = document["inputs"][0]["data"][0]
    assert (type(value), value) == (int, number)


def test_text_only_the_json_module_accepts_is_still_read() -> None:
    assert json_loads('"\\ud800"') == "\ud800"  # a lone surrogate, escaped


def test_keys_that_are_not_text_become_text_as_with_the_json_module() -> None:
    assert json_loads(json_dumps({1: "one"})) == {"1": "one"}


@pytest.mark.parametrize("value", VALUES)
def test_an_event_record_reads_back_as_its_data(value: Any) -> None:
    assert json_loads(json_record(value)) == json.loads(json.dumps(value))


@pytest.mark.parametrize("huge", [None, 2**70])  # beyond 64 bits, the json module writes the record
def test_an_event_record_writes_non_finite_numbers_as_null(huge: int | None) -> None:
    data = {"values": [float("nan"), float("inf"), -float("inf"), 1.5], "nested": {"x": (float("nan"),)}, "n": huge}

    assert json.loads(json_record(data)) == {"values": [None, None, None, 1.5], "nested": {"x": [None]}, "n": huge}


@pytest.mark.parametrize("huge", [None, 2**70])
def test_an_event_record_writes_timestamps_as_pydantic_does_and_other_types_as_text(huge: int | None) -> None:
    moments = [datetime(2026, 12, 1, 10, 30, tzinfo=UTC), datetime(2026, 12, 1, 10, 30, 0, 5, tzinfo=UTC)]
    data = json_loads(json_record({"at": moments, "path": PurePosixPath("a/b"), "n": huge}))

    assert data == {"at": ["2026-12-01T10:30:00Z", "2026-12-01T10:30:00.000005Z"], "path": "a/b", "n": huge}


@pytest.mark.parametrize("huge", [None, 2**70])
def test_an_event_record_writes_json_already_encoded_as_it_is_or_refuses_it(huge: int | None) -> None:
    data = {"records": orjson.Fragment(b'[{"a":1}]'), "n": huge}

    if huge is None:
        assert json_record(data) == b'{"records":[{"a":1}],"n":null}'
    else:  # the json module cannot read a fragment's text: an error, not a record with its repr in it
        with pytest.raises(TypeError, match="Fragment"):
            json_record(data)
