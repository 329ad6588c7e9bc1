"""The alerts API's answers as text tables for people (`plantwatch alerts`; `--json` prints them raw)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from plantwatch.contracts.times import parse_timestamp


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Left-aligned columns two spaces apart; None shows as `-`; the last column is not padded."""
    cells = [[str(h) for h in headers]] + [["-" if c is None or c == "" else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r[:-1], widths, strict=False)) + "  " * (len(r) > 1) + r[-1] for r in cells)


def age(rfc3339: str | None, now: float) -> str:
    """`2025-03-01T14:02:11Z` → `3m12s ago`: the largest two units."""
    if not rfc3339:
        return "-"
    s = max(0, int(now - parse_timestamp(rfc3339)))
    parts = [(s // 86400, "d"), (s // 3600 % 24, "h"), (s // 60 % 60, "m"), (s % 60, "s")]
    first = next((i for i, (n, _) in enumerate(parts) if n), 3)
    return ("".join(f"{n}{u}" for n, u in parts[first : first + 2] if n) or "0s") + " ago"


def alerts_table(alerts: Sequence[Mapping[str, Any]], now: float) -> str:
    if not alerts:
        return "no alerts"
    rows = [(a["fingerprint"], a["severity"], a["status"], age(a["startsAt"], now), a["ackedBy"], a["summary"]) for a in alerts]
    return table(("FINGERPRINT", "SEVERITY", "STATUS", "STARTED", "ACKED BY", "SUMMARY"), rows)


def alert_text(a: Mapping[str, Any], now: float) -> str:
    """One alert, a field per line."""
    fields = [
        ("fingerprint", a["fingerprint"]),
        ("status", a["status"]),
        ("severity", a["severity"]),
        ("value", a["value"]),
        ("summary", a["summary"]),
        ("started", f"{a['startsAt']} ({age(a['startsAt'], now)})"),
        ("ended", a["endsAt"]),
        (
            "acknowledged",
            f"by {a['ackedBy']} at {a['ackedAt']}" + (f": {a['ackComment']}" if a["ackComment"] else "") if a["ackedBy"] else None,
        ),
    ]
    return "\n".join(f"{k + ':':14}{'-' if v is None else v}" for k, v in fields)


def history_table(events: Sequence[Mapping[str, Any]]) -> str:
    if not events:
        return "no history"
    return table(("AT", "WHAT", "DETAIL"), [(e["at"], e["what"], _detail(e["what"], e["detail"])) for e in events])


def _detail(what: str, d: Mapping[str, Any]) -> str:
    """The few fields a person reads per kind of event; the rest is in --json."""
    if what in ("notification", "delivery"):
        text = f"{d.get('receiver')} {d.get('kind')}"
        if what == "delivery":
            text += f": {d.get('result')} after {len(d.get('attempts') or ())} attempt(s), {d.get('status')}"
        return text
    if what in ("acknowledged", "unacknowledged"):
        return f"by {d.get('by')}" + (f": {d['comment']}" if d.get("comment") else "")
    return " ".join(f"{k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in d.items())


def matcher_text(m: Mapping[str, Any]) -> str:
    op = ("=~" if m["isEqual"] else "!~") if m["isRegex"] else ("=" if m["isEqual"] else "!=")
    return f"{m['name']}{op}{m['value']}"


def silences_table(silences: Sequence[Mapping[str, Any]]) -> str:
    if not silences:
        return "no silences"
    rows = [
        (s["id"], s["status"], ",".join(matcher_text(m) for m in s["matchers"]), s["startsAt"], s["endsAt"], s["createdBy"], s["comment"])
        for s in silences
    ]
    return table(("ID", "STATUS", "MATCHERS", "STARTS", "ENDS", "CREATED BY", "COMMENT"), rows)
