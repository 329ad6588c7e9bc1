"""`plantwatch query`'s pure parts: reading its times, naming an alert's transitions, and drawing rows as text.

No store and no clock here (`now` is passed in), so every rule of the output is a unit test.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from plantwatch.alerts.tables import table
from plantwatch.contracts.times import iso, parse_timestamp

#: The eight block heights a sparkline is drawn with, lowest first.
BARS = "▁▂▃▄▅▆▇█"
#: Characters of a dead letter's payload shown in a table (JSON has the stored 4 KiB).
PAYLOAD_EXCERPT = 40

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
#: `15m` or `-15m` (ago): argparse takes a bare `-15m` for an option, so the sign is optional (`--from=-15m` works too).
_RELATIVE = re.compile(r"-?(\d+(?:\.\d+)?)([smhdw])")
_EPOCH = re.compile(r"\d+(?:\.\d+)?")
ACCEPTED_TIMES = (
    "ISO 8601 (2026-01-05T08:00:00Z; no offset means UTC), epoch seconds (1767600000), 'now', "
    "or a time ago as 30s, 15m, 2h, 7d, 1w (or --from=-15m)"
)


def parse_when(text: str, now: float) -> float:
    """A --from/--to value as epoch seconds; ValueError naming what is accepted."""
    text = text.strip()
    if text == "now":
        return now
    if m := _RELATIVE.fullmatch(text):
        return now - float(m[1]) * _UNITS[m[2]]
    if _EPOCH.fullmatch(text):
        return float(text)
    try:
        return parse_timestamp(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a time; accepted: {ACCEPTED_TIMES}") from None


#: Threshold levels in order, for telling an escalation from an easing (a rule's own severity ranks as warning).
_LEVELS = {"info": 0, "warning": 1, "critical": 2, "emergency": 3}


def transition(state: str, severity: str, previous_state: str | None, previous_severity: str | None) -> str:
    """What a stored alert event was: `fired`, `escalated` or `eased` (a level change while firing), `resolved`."""
    if state != "firing":
        return state
    if previous_state != "firing":
        return "fired"
    return "escalated" if _LEVELS.get(severity, 1) > _LEVELS.get(previous_severity or "", 1) else "eased"


def sparkline(buckets: Sequence[float | None]) -> str:
    """One block per bucket, its height the bucket's value between the lowest and highest; a gap (None) a space.

    A flat series is drawn at mid height: no bucket is higher than another, and none is nothing.
    """
    present = [v for v in buckets if v is not None]
    if not present:
        return ""
    low, high = min(present), max(present)
    top = len(BARS) - 1

    def bar(v: float) -> str:
        return BARS[top // 2] if high == low else BARS[round((v - low) / (high - low) * top)]

    return "".join(" " if v is None else bar(v) for v in buckets)


def number(value: float | None) -> str:
    """Six significant digits, as a person reads a reading; None (an absence has no value) as `-`."""
    return "-" if value is None else f"{value:.6g}"


def excerpt(payload: bytes, limit: int = PAYLOAD_EXCERPT) -> str:
    """The start of a payload on one line: UTF-8 with anything unprintable escaped, cut with `…`."""
    text = payload.decode("utf-8", errors="backslashreplace")
    text = "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def readings_table(rows: Sequence[Mapping[str, Any]]) -> str:
    if not rows:
        return "no readings"
    rows_shown = [(r["time"], r["node"], r["sensor"], number(r["value"]), r["unit"]) for r in rows]
    return table(("TIME", "NODE", "SENSOR", "VALUE", "UNIT"), rows_shown)


def alerts_table(rows: Sequence[Mapping[str, Any]]) -> str:
    if not rows:
        return "no alert events"
    return table(
        ("TIME", "EVENT", "SEVERITY", "RULE", "NODE", "SENSOR", "VALUE", "SUMMARY"),
        [(r["time"], r["event"], r["severity"], r["rule"], r["node"], r["sensor"], number(r["value"]), r["summary"]) for r in rows],
    )


def dead_letters_table(rows: Sequence[Mapping[str, Any]]) -> str:
    if not rows:
        return "no dead letters"
    return table(
        ("RECEIVED", "REASON", "TOPIC", "BYTES", "PAYLOAD", "DETAIL"),
        [(r["time"], r["reason"], r["topic"], r["payload_bytes"], r["payload_excerpt"], r["detail"]) for r in rows],
    )


def summary_table(rows: Sequence[Mapping[str, Any]]) -> str:
    if not rows:
        return "no readings"
    return table(
        ("NODE", "SENSOR", "COUNT", "MIN", "MEAN", "MAX", "LAST", "SINCE", "TREND"),
        [
            (r["node"], r["sensor"], r["count"], number(r["min"]), number(r["mean"]), number(r["max"]),
             f"{number(r['last'])} {r['unit']}".strip(), r["first_time"], r["sparkline"])
            for r in rows
        ],
    )  # fmt: skip


def stamped(ts: float) -> str:
    """A stored time as people read it (RFC 3339 UTC, to the millisecond at most)."""
    return iso(round(ts, 3))
