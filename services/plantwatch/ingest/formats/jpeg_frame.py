"""jpeg-frame: a camera's frame, the message being the JPEG bytes themselves (no JSON, no base64).

One message is one frame, stamped with the gateway's receive time: a JPEG carries
no clock the gateway could trust, and the pipeline sees a message as (topic,
payload), without MQTT properties. It decodes to one sample whose field `frame`
holds the JPEG; validation takes the frame's size in bytes as the sensor's
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
    except (UnidentifiedImageError, OSError) as exc:
        raise DecodeError("malformed", f"a JPEG header Pillow cannot read ({len(payload)} bytes): {exc}") from None
    if kind != "JPEG":
        raise DecodeError("malformed", f"a {kind} image; a jpeg-frame message is one JPEG image")
    if width > MAX_SIDE or height > MAX_SIDE:
        raise DecodeError("oversized", f"a {width}x{height} frame; accepted up to {MAX_SIDE}x{MAX_SIDE} pixels")
    return [Sample({FIELD: payload})]


def encode(device_id: str, ts: float, values: dict[str, Any]) -> bytes:
    frame = values.get(FIELD)
    if not isinstance(frame, bytes):
        raise ValueError(f"a jpeg-frame message is the JPEG bytes of field {FIELD!r}; got {type(frame).__name__}")
    return frame


FORMAT = PayloadFormat("jpeg-frame", default_field, decode, encode)
