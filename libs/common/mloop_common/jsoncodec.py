"""JSON text for Kafka records and database columns: fast codecs with the json module's exact results.

Drift reads and writes thousands of rows of JSON a second; orjson parses them several times faster than the
json module. Event records are written by msgspec (see ``json_record``). Where a codec and the json module
differ (integers beyond 64 bits, lone surrogates) the json module decides.
"""

from __future__ import annotations

import json
import math
from datetime import datetime
from typing import Any

import msgspec
import orjson


def json_dumps(value: Any) -> str:
    """A JSON column's text: orjson (drift writes thousands of rows a second), else the json module for what orjson
    refuses (integers beyond 64 bits)."""
    try:
        return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:
        return json.dumps(value)


def json_loads(text: str | bytes) -> Any:
    """A JSON column's value, exactly as the json module would give it, mostly parsed by orjson.

    orjson reads integers beyond 64 bits as floats; a float that large in its result sends the text to the json
    module (exact integers matter to the audit chain's hashes). Checking the parsed value costs far less than
    scanning the text for long runs of digits.
    """
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:  # e.g. lone surrogates escaped in the text, which the json module accepts
        return json.loads(text)
    if isinstance(text, bytes) and _LONG_DIGITS not in text.translate(_DIGIT_MARKS):
        return value  # no integer long enough to leave 64 bits, so nothing orjson made a float of
    return json.loads(text) if _has_huge_float(value) else value


_HUGE = float(2**63)
# Every integer of up to 18 digits fits in 64 bits; the translation marks digits "9" and all else " ".
_LONG_DIGITS = b"9" * 19
_DIGIT_MARKS = bytes(ord("9") if chr(byte).isdigit() and byte < 128 else ord(" ") for byte in range(256))


def _has_huge_float(value: Any) -> bool:
    pending = [value]
    while pending:
        item = pending.pop()
        kind = type(item)
        if kind is float:
            if not -_HUGE < item < _HUGE and item == item:  # NaN never comes from JSON text; inf does not either
                return True
        elif kind is dict:
            pending.extend(item.values())
        elif kind is list:
            pending.extend(item)
    return False


def json_record(value: Any) -> bytes:
    """Compact JSON bytes of an event's data; a timestamp is written as pydantic writes one (ISO 8601, UTC as
    ``Z``), what else JSON has no type for (a path) as its text, a NaN or an infinity as null (JSON has none of
    them). A ``msgspec.Raw`` (JSON already encoded) is written as it is.

    msgspec, not orjson: serving encodes a prediction record and an answer per request. Switching only that
    encoding on and off in the running server under load, ``orjson.dumps`` cost it 7-11 % more CPU a request
    (4 runs) and msgspec 1-3 % (3 runs), several times what either costs in a loop (2.4 and 2.0 us); that
    measure's noise was up to 4 points between two identical servers.
    """
    try:
        return _RECORD_ENCODER.encode(value)
    except UnicodeEncodeError:
        return _json_module_record(value)


def _json_module_record(value: Any) -> bytes:
    """What msgspec refuses (a lone surrogate, which the json module escapes), written as msgspec would."""
    return json.dumps(_finite(value), separators=(",", ":"), default=_text).encode()


def json_record_into(value: Any, buffer: bytearray) -> None:
    """``json_record(value)`` appended to ``buffer``, with no bytes object of its own made on the way."""
    start = len(buffer)
    try:
        _RECORD_ENCODER.encode_into(value, buffer, -1)
    except UnicodeEncodeError:
        del buffer[start:]  # what msgspec wrote before it stopped
        buffer += _json_module_record(value)


def _as_json_text(value: Any) -> str:
    """What msgspec cannot write (a path, a dict key that is a boolean or None): as the json module writes it."""
    if value is None or type(value) is bool:
        return json.dumps(value)
    return str(value)


# NaN and the infinities come out as null, integers of any size exactly, dict keys that are numbers as text.
_RECORD_ENCODER = msgspec.json.Encoder(enc_hook=_as_json_text)


def _text(value: Any) -> str:
    if isinstance(value, datetime):
        text = value.isoformat()
        return text[:-6] + "Z" if text.endswith("+00:00") else text
    if isinstance(value, msgspec.Raw):  # its text cannot be read back: never write its repr instead
        raise TypeError("a msgspec.Raw cannot be written by the json module")
    return str(value)


def _finite(value: Any) -> Any:
    kind = type(value)
    if kind is float:
        return value if math.isfinite(value) else None
    if kind is dict:
        return {key: _finite(item) for key, item in value.items()}
    if kind is list or kind is tuple:
        return [_finite(item) for item in value]
    return value
