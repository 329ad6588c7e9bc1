"""Timestamps: epoch seconds to RFC 3339 text and back."""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime
from typing import Any


def iso(ts: float) -> str:
    """Epoch seconds → RFC 3339 UTC with a Z (ISO 8601), as the seed firmware writes it."""
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def now_rfc3339() -> str:
    """Now, to the second: a condition's lastTransitionTime."""
    return iso(int(time.time()))


def parse_timestamp(raw: Any) -> float:
    """ISO-8601 text (naive means UTC) or epoch seconds/milliseconds → epoch seconds."""
    if isinstance(raw, bool):
        raise ValueError("a boolean is not a timestamp")
    if isinstance(raw, (int, float)):
        value = float(raw)
        if not math.isfinite(value):
            raise ValueError("timestamp is not finite")
        return value / 1000.0 if value > 1e11 else value
    if isinstance(raw, str):
        dt = datetime.fromisoformat(raw.replace("Z", "+00:00"))
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=UTC)
        return dt.timestamp()
    raise ValueError(f"expected ISO 8601 text or a number of epoch seconds or milliseconds, got {type(raw).__name__}")
