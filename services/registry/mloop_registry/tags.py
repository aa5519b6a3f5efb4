"""Bounds on tags: what a key may look like, how long a value may be, how many one model or version holds."""

from __future__ import annotations

import re

from mloop_common.errors import InvalidInput

MAX_TAGS = 32
MAX_VALUE_CHARS = 255
TAG_KEY = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,62}")  # also what search's tag.KEY accepts


def check_tags(new: dict[str, str], existing: dict[str, str]) -> None:
    """InvalidInput naming the tag when a key or value is out of bounds, or the total would pass MAX_TAGS."""
    if not new:
        raise InvalidInput("no tags given", field="tags")
    for key, value in new.items():
        if not TAG_KEY.fullmatch(key):
            raise InvalidInput(
                f"tag key {key[:80]!r}: 1-63 letters, digits, '_', '.' or '-', not starting with '.' or '-'",
                field=f"tags.{key[:80]}",
            )
        if len(value) > MAX_VALUE_CHARS:
            raise InvalidInput(f"tag {key!r}: value over {MAX_VALUE_CHARS} characters", field=f"tags.{key}")
    if len(existing | new) > MAX_TAGS:
        raise InvalidInput(f"more than {MAX_TAGS} tags", field="tags")
