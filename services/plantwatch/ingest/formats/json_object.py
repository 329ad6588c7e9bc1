"""A JSON payload read as one object, strictly: what the four JSON formats share.

orjson does the parsing; a duplicate key, which orjson resolves silently by keeping
the last value, is refused as malformed because which value the node meant is unknown.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

from plantwatch.ingest.codecs import DecodeError, clip

_BACKSLASH = ord("\\")


def json_object(payload: bytes) -> dict[str, Any]:
    """The payload as a JSON object (a fresh dict, the caller's to change); DecodeError `malformed` otherwise."""
    try:
        doc = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise DecodeError("malformed", f"not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise DecodeError("malformed", f"expected a JSON object, got {type(doc).__name__}")
    # orjson keeps the last of duplicate keys without a word. Without a backslash no string
    # holds a quote character, so the payload has two quotes per key and per string value,
    # and so does the document written back unless a duplicate (key and value) was dropped:
    # a memchr, two byte counts and one orjson.dumps, all in C (about a tenth of the loads),
    # and the slow exact check only when they cannot tell.
    if _BACKSLASH in payload or payload.count(b'"') != orjson.dumps(doc).count(b'"'):
        _reject_duplicate_keys(payload)
    return doc


def _reject_duplicate_keys(payload: bytes) -> None:
    """DecodeError naming the first key that occurs twice in one object of a (valid) JSON document."""

    def pairs(items: list[tuple[str, Any]]) -> None:
        seen = set()
        for key, _ in items:
            if key in seen:
                raise DecodeError(
                    "malformed",
                    f"duplicate key {clip(key)!r} in one JSON object; each key may occur once (which value was meant is unknown)",
                )
            seen.add(key)

    try:
        json.loads(payload, object_pairs_hook=pairs)
    except RecursionError:  # deeper than the interpreter's recursion limit: orjson took it, json cannot check it
        raise DecodeError("malformed", "JSON nested too deeply to check for duplicate keys") from None


def require(doc: dict[str, Any], *names: str) -> None:
    """DecodeError `missing_field` unless `doc` has every key of `names`."""
    missing = [n for n in names if n not in doc]
    if missing:
        raise DecodeError("missing_field", f"missing {', '.join(missing)}; this format needs {', '.join(names)}")
