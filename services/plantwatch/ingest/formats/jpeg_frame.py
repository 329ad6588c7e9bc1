"""jpeg-frame: a camera's frame, the message being the JPEG bytes themselves (no JSON, no base64).

One message is one frame. Its time is a JPEG comment (COM segment) written right
after the start marker, `plantwatch-ts=<epoch seconds>` (as `encode` writes it) or ISO-8601;
without one, the gateway's receive time (the pipeline sees a message as (topic,
payload), without MQTT properties, and EXIF clocks lack a time zone). Unstamped
frames of one node that arrive in one batch share that time, so all but the first
are refused as `conflict`: a camera sending faster than about one frame a second
stamps its frames. It decodes to one sample whose field `frame` holds the JPEG; validation takes the frame's size in bytes as the sensor's
reading (so a camera has presence, rates and AlertRules like any node), and the
pipeline hands the frame itself to the plant's image DetectorModels
(inference/image_scorers.py).

Refused, and dead-lettered like any bad payload: a message that is not a whole
JPEG (no start-of-image marker, no end-of-image marker: a truncated frame, or a
header Pillow cannot read) as `malformed`; a frame wider or taller than MAX_SIDE
pixels as `oversized` (the node's payload.maxBytes, at most 1 MiB, bounds its bytes).
"""

from __future__ import annotations

import io
from typing import Any

from PIL import Image, UnidentifiedImageError

from plantwatch.ingest.codecs import DecodeError, PayloadFormat, Sample

#: The widest and tallest frame taken: a camera sends what the detectors need, and a small JPEG
#: claiming a huge image would cost the scorer its memory when decoded.
MAX_SIDE = 4096
#: The field every sensor of a jpeg-frame node reads: a camera node has one.
FIELD = "frame"
_SOI, _EOI = b"\xff\xd8\xff", b"\xff\xd9"
#: The comment that stamps a frame: `plantwatch-ts=` then epoch seconds.
STAMP = b"plantwatch-ts="


def default_field(sensor_type: str, sensor_name: str) -> str:
    return FIELD


def decode(payload: bytes) -> list[Sample]:
    """One JPEG frame; its header is read (not its pixels) to check it is one."""
    if not payload.startswith(_SOI):
        raise DecodeError("malformed", f"not a JPEG: a jpeg-frame message is one JPEG image, starting FF D8 FF (got {payload[:3].hex()!r})")
    if not payload.rstrip(b"\x00").endswith(_EOI):  # some encoders pad after the end marker
        raise DecodeError("malformed", f"a JPEG of {len(payload)} bytes without its end marker FF D9: a truncated frame")
    try:
        with Image.open(io.BytesIO(payload)) as image:
            kind, (width, height) = image.format, image.size
            comment = image.info.get("comment", b"")
    except (UnidentifiedImageError, OSError) as exc:
        raise DecodeError("malformed", f"a JPEG header Pillow cannot read ({len(payload)} bytes): {exc}") from None
    if kind != "JPEG":
        raise DecodeError("malformed", f"a {kind} image; a jpeg-frame message is one JPEG image")
    if width > MAX_SIDE or height > MAX_SIDE:
        raise DecodeError("oversized", f"a {width}x{height} frame; accepted up to {MAX_SIDE}x{MAX_SIDE} pixels")
    ts = _stamp(comment[len(STAMP) :].decode("ascii", "replace")) if comment.startswith(STAMP) else None
    return [Sample({FIELD: payload}, ts)]


def _stamp(text: str) -> float | str:
    """Epoch seconds as a number; other text as sent, for validation to read as ISO-8601 or refuse as bad_timestamp."""
    try:
        return float(text) if text.isascii() and "_" not in text else text
    except ValueError:
        return text


def encode(device_id: str, ts: float, values: dict[str, Any]) -> bytes:
    """The JPEG of field `frame` stamped `ts` (a stamp it already has is replaced)."""
    frame = values.get(FIELD)
    if not isinstance(frame, bytes) or not frame.startswith(_SOI):
        raise ValueError(f"a jpeg-frame message is the JPEG bytes of field {FIELD!r}; got {type(frame).__name__}")
    if frame[2:4] == b"\xff\xfe" and frame[6 : 6 + len(STAMP)] == STAMP:
        frame = frame[:2] + frame[4 + int.from_bytes(frame[4:6], "big") :]
    comment = STAMP + f"{ts:.6f}".encode()
    return frame[:2] + b"\xff\xfe" + (len(comment) + 2).to_bytes(2, "big") + comment + frame[2:]


FORMAT = PayloadFormat("jpeg-frame", default_field, decode, encode)
