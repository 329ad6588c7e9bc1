"""Status conditions as the Kubernetes API conventions define them (pure)."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any


def now_rfc3339() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def set_condition(conditions: list[dict[str, Any]] | None, type_: str, status: str, reason: str, message: str,
                  generation: int | None, now: str) -> list[dict[str, Any]]:
    """Return the conditions with `type_` set; lastTransitionTime moves only when the status changes."""
    out = [dict(c) for c in conditions or []]
    current = next((c for c in out if c.get("type") == type_), None)
    changed = current is None or current.get("status") != status
    condition = {
        "type": type_,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": now if changed else current.get("lastTransitionTime", now),
    }
    if generation is not None:
        condition["observedGeneration"] = generation
    if current is None:
        out.append(condition)
    else:
        out[out.index(current)] = condition
    return sorted(out, key=lambda c: c["type"])


def condition_status(conditions: list[dict[str, Any]] | None, type_: str) -> str | None:
    return next((c.get("status") for c in conditions or [] if c.get("type") == type_), None)
