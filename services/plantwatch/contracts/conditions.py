"""Status conditions as the Kubernetes API conventions define them (pure).

Each writer (operator, gateway, inference service) owns its own condition types;
all of them keep `lastTransitionTime` where it was unless the status flips.
"""

from __future__ import annotations

from typing import Any


def find_condition(conditions: list[dict[str, Any]] | None, type_: str) -> dict[str, Any] | None:
    return next((c for c in conditions or () if c.get("type") == type_), None)


def condition_status(conditions: list[dict[str, Any]] | None, type_: str) -> str | None:
    current = find_condition(conditions, type_)
    return None if current is None else current.get("status")


def condition(
    type_: str, status: str, reason: str, message: str, previous: dict[str, Any] | None, generation: int | None, now: str
) -> dict[str, Any]:
    """The condition `type_` replacing `previous`; lastTransitionTime moves only when the status flips."""
    changed = previous is None or previous.get("status") != status
    out = {
        "type": type_,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": now if changed else previous.get("lastTransitionTime", now),
    }
    if generation is not None:
        out["observedGeneration"] = generation
    return out


def set_condition(
    conditions: list[dict[str, Any]] | None, type_: str, status: str, reason: str, message: str, generation: int | None, now: str
) -> list[dict[str, Any]]:
    """Return the conditions with `type_` set (sorted by type); lastTransitionTime moves only when the status changes."""
    out = [dict(c) for c in conditions or []]
    current = find_condition(out, type_)
    new = condition(type_, status, reason, message, current, generation, now)
    if current is None:
        out.append(new)
    else:
        out[out.index(current)] = new
    return sorted(out, key=lambda c: c["type"])
