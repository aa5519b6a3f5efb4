"""Events and JSON columns go through orjson for speed, and read back exactly what the json module would give."""

import json
from datetime import UTC, datetime
from pathlib import PurePosixPath
from typing import Any

import msgspec
import pytest

from mloop_common.jsoncodec import json_dumps, json_loads, json_record, json_record_into

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


# A lone surrogate sends a record to the json module: both encoders must write the same JSON.
TEXTS = [None, "\ud800"]


@pytest.mark.parametrize("odd", TEXTS)
def test_an_event_record_writes_non_finite_numbers_as_null(odd: str | None) -> None:
    data = {"values": [float("nan"), float("inf"), -float("inf"), 1.5], "nested": {"x": (float("nan"),)}, "s": odd}

    assert json.loads(json_record(data)) == {"values": [None, None, None, 1.5], "nested": {"x": [None]}, "s": odd}


def test_an_event_record_writes_integers_beyond_64_bits_exactly() -> None:
    assert json_loads(json_record({"n": 2**70, "m": -(2**70)})) == {"n": 2**70, "m": -(2**70)}


@pytest.mark.parametrize("odd", TEXTS)
def test_an_event_record_writes_timestamps_as_pydantic_does_and_other_types_as_text(odd: str | None) -> None:
    moments = [datetime(2026, 12, 1, 10, 30, tzinfo=UTC), datetime(2026, 12, 1, 10, 30, 0, 5, tzinfo=UTC)]
    data = json_loads(json_record({"at": moments, "path": PurePosixPath("a/b"), "s": odd}))

    assert data == {"at": ["2026-12-01T10:30:00Z", "2026-12-01T10:30:00.000005Z"], "path": "a/b", "s": odd}


@pytest.mark.parametrize("odd", TEXTS)
def test_an_event_record_writes_json_already_encoded_as_it_is_or_refuses_it(odd: str | None) -> None:
    data = {"records": msgspec.Raw(b'[{"a":1}]'), "s": odd}

    if odd is None:
        assert json_record(data) == b'{"records":[{"a":1}],"s":null}'
    else:  # the json module cannot read the raw text: an error, not a record with its repr in it
        with pytest.raises(TypeError, match="Raw"):
            json_record(data)


@pytest.mark.parametrize("odd", TEXTS)
def test_a_record_appended_to_a_buffer_is_the_record_written_alone(odd: str | None) -> None:
    buffer = bytearray(b"[")
    data = {"at": datetime(2026, 12, 1, 10, 30, tzinfo=UTC), "values": [1.5, float("nan")], "s": odd}

    json_record_into(data, buffer)

    assert bytes(buffer) == b"[" + json_record(data)


def test_an_event_records_keys_that_are_not_text_are_written_as_the_json_module_writes_them() -> None:
    data = {True: 1, False: 2, None: 3, 4: 5, 1.5: 6}

    assert json_record(data) == json.dumps(data, separators=(",", ":")).encode()
