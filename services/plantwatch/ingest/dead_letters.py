"""What a refused message becomes: a row stored with its batch, and a message published on plantwatch/dead-letter/<node>."""

from __future__ import annotations

import base64

import orjson

from plantwatch.ingest.validate import Rejection
from plantwatch.store.sqlite import DeadLetter, payload_record

DEAD_LETTER_PREFIX = "plantwatch/dead-letter"
#: Characters kept of a dead letter's topic and of each rejection's detail: an MQTT topic may be
#: 64 KiB, and the details quote it, so without this a queued dead letter could be 130 KiB.
DEAD_LETTER_TEXT = 1024
#: Dead letters and rebirth requests waiting to be published (mqtt.publisher.Publisher's max_queued):
#: under a flood of bad messages the rest are dropped from MQTT, and counted; stored all the same.
#: Each is under about 10 KiB (a 4 KiB payload prefix, base64 at worst, and clipped texts), so
#: the queue holds at most about 20 MiB.
DEAD_LETTER_QUEUE = 2_000


def clip(text: str, limit: int = DEAD_LETTER_TEXT) -> str:
    """At most `limit` characters of a text an attacker may have made long, marked where it was cut."""
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text)} characters)"


def dead_letter(topic: str, payload: bytes, node: str | None, rejections: list[Rejection], now: float, correlation_id: str) -> bytes:
    """The DLQ message: the payload's first DEAD_LETTER_PAYLOAD_BYTES bytes, verbatim, its size and sha256, every reason."""
    prefix, size, sha256 = payload_record(payload)
    try:
        body, encoding = prefix.decode("utf-8"), "utf-8"
    except UnicodeDecodeError as exc:
        if size > len(prefix) and exc.reason == "unexpected end of data":  # the cut split a character: drop its start
            body, encoding = prefix[: exc.start].decode("utf-8"), "utf-8"
        else:
            body, encoding = base64.b64encode(prefix).decode(), "base64"
    if encoding == "utf-8" and len(orjson.dumps(body)) > 2 * len(prefix) + 2:
        body, encoding = base64.b64encode(prefix).decode(), "base64"  # mostly control characters: \u0001 is six bytes
    return orjson.dumps(
        {
            "correlation_id": correlation_id,
            "reason": rejections[0].reason,
            "rejections": [{"reason": r.reason, "detail": clip(r.detail), "field": r.field and clip(r.field)} for r in rejections],
            "topic": clip(topic),
            "node": node,
            "received_at": now,
            "payload": body,
            "payload_encoding": encoding,
            "payload_bytes": size,
            "payload_sha256": sha256,
            "payload_truncated": size > len(prefix),
        }
    )


def letter(
    topic: str, payload: bytes, node: str | None, rejections: list[Rejection], now: float, correlation_id: str
) -> tuple[DeadLetter, tuple[str, bytes]]:
    """A refused message's row for the store, and its (topic, body) to publish once that row is stored."""
    row = (now, clip(topic), rejections[0].reason, clip("; ".join(r.detail for r in rejections), 4 * DEAD_LETTER_TEXT), payload)
    return row, (f"{DEAD_LETTER_PREFIX}/{node or 'unknown'}", dead_letter(topic, payload, node, rejections, now, correlation_id))
