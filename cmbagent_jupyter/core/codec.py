"""JSON in and out of the store, its wire and the step journal: compact, fast (orjson),
anything JSON lacks written as its string (as `json.dumps(default=str)` does).

orjson refuses a few values the standard encoder takes (integers beyond 64 bits); those
fall back to it, so every value the store took before still goes in.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

# datetimes and dataclasses go through `default` (str), as the standard encoder writes them
_OPTIONS = (orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_PASSTHROUGH_DATETIME
            | orjson.OPT_PASSTHROUGH_DATACLASS)


def dumps_bytes(value: Any) -> bytes:
    try:
        return orjson.dumps(value, default=str, option=_OPTIONS)
    except (TypeError, orjson.JSONEncodeError):
        return json.dumps(value, default=str, separators=(",", ":")).encode()


def dumps(value: Any) -> str:
    return dumps_bytes(value).decode()


def loads(data: bytes | bytearray | memoryview | str) -> Any:
    """Parse JSON; ValueError (orjson's JSONDecodeError is one) if it is not."""
    return orjson.loads(data)
