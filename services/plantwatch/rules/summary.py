"""An AlertRule's summary: user text with placeholders, or the default text of its condition type.

Placeholders: `{rule}`, `{node}`, `{sensor}`, `{level}` (the severity, `critical resolved` on a
resolve), `{value}` and `{threshold}`, which take a number's format spec (`{value:.1f}`; plain is
`:g`), `{unit}` (the sensor's unit), `{direction}` (`above` or `below`: the side of `{threshold}`
the compared value is on, so `{value} {direction} {threshold}` is true firing and resolved),
`{equipment}` and `{location}` (the SensorNode's), and `{duration}` (how long the condition has
held, or held before it resolved, as `2m 10s`). A value that is unknown renders as ''. An unknown
placeholder is left as it is. Attribute and index access (`{node.x}`, `{sensor[0]}`), positional
fields and conversions are refused, so a template can only show these values, never reach into
the process. A template that cannot render (an unbalanced brace, `{value:d}`, `{0}`, `{node.x}`)
is an error when the plant is loaded (`check`); at run time it falls back to the default summary.

The default summary (no template) names the value with its unit, the threshold crossed, the
equipment and location, and how long it has been so, in words per condition type (`default`).
"""

from __future__ import annotations

import string
from dataclasses import dataclass

PLACEHOLDERS = (
    "{rule}, {node}, {sensor}, {level}, {value} and {threshold} (numbers: {value:.1f}), {unit}, "
    "{direction}, {equipment}, {location}, {duration}"
)


@dataclass(frozen=True, slots=True)
class Facts:
    """What one alert event's summary can show."""

    rule: str
    #: The rule's condition type: Threshold, Absence, RateOfChange or AnomalyScore.
    condition: str
    node: str
    sensor: str
    #: "firing" or "resolved".
    state: str
    severity: str
    value: float | None
    unit: str = ""
    #: The level crossed (Threshold; on a resolve, the value it went back past), maxPerMinute
    #: (RateOfChange), the score threshold (AnomalyScore), absence.after in seconds (Absence).
    threshold: float | None = None
    #: "above" or "below": the side of `threshold` the compared value is on.
    direction: str = ""
    equipment: str | None = None
    location: str | None = None
    #: Seconds the condition has held (firing) or held before it cleared (resolved); None when unknown.
    duration: float | None = None


class _Number:
    """A number that formats with the template's spec (`:g` when none), and as '' when absent."""

    __slots__ = ("_value",)

    def __init__(self, value: float | None):
        self._value = value

    def __format__(self, spec: str) -> str:
        if self._value is None:
            return ""
        return format(self._value, spec or "g")


def human_duration(seconds: float | None) -> str:
    """`2m 10s`, `5m`, `1h 2m`, `3d 4h`, `0.5s`: the two largest units, a zero second unit left out."""
    if seconds is None:
        return ""
    if seconds < 10:
        return f"{round(seconds, 1):g}s"
    rest = int(round(seconds))
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, rest = divmod(rest, size)
        if count or parts:
            parts.append((count, unit))
    return " ".join(f"{count}{unit}" for count, unit in parts[:2] if count)


def _where(equipment: str | None, location: str | None) -> str:
    if equipment and location:
        return f" ({equipment} at {location})"
    if equipment or location:
        return f" ({equipment})" if equipment else f" (at {location})"
    return ""


_FORMATTER = string.Formatter()


def render(template: str, facts: Facts) -> str:
    """The summary of one alert event from a template; ValueError if the template cannot render."""
    f = facts
    fields = {
        "rule": f.rule,
        "node": f.node,
        "sensor": f.sensor,
        "level": f.severity if f.state == "firing" else f"{f.severity} resolved",
        "value": _Number(f.value),
        "threshold": _Number(f.threshold),
        "unit": f.unit,
        "direction": f.direction,
        "equipment": f.equipment or "",
        "location": f.location or "",
        "duration": human_duration(f.duration),
    }
    out = []
    for literal, name, spec, conversion in _FORMATTER.parse(template):  # ValueError: an unbalanced brace
        out.append(literal)
        if name is None:
            continue
        if not name.isidentifier():
            raise ValueError(f"{{{name}}} is not a placeholder (no positions, attributes or indexes)")
        if name not in fields:  # annotations are user text: an unknown placeholder stays as written
            out.append("{" + name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}")
            continue
        if conversion:
            raise ValueError(f"{{{name}!{conversion}}}: conversions are not supported")
        if "{" in spec:
            raise ValueError(f"{{{name}:{spec}}}: a placeholder inside a format spec is not supported")
        out.append(format(fields[name], spec))
    return "".join(out)


def default(facts: Facts) -> str:
    """The default summary: what, where, past which limit, and for how long, in words per condition type.

    Threshold: `temperature 82.4 celsius on press-1 (press-3 at hall-1/line-2) above the critical level 80,
    ongoing for 2m 10s`, resolved `... back below 78 after 5m`. Parts that are unknown (no unit, no
    equipment or location, a condition that held for under a second) are left out.
    """
    f = facts
    where = _where(f.equipment, f.location)
    unit = f" {f.unit}" if f.unit else ""
    limit = format(_Number(f.threshold), "")
    lasted = human_duration(f.duration) if f.duration is not None and f.duration >= 1 else ""
    ongoing = f", ongoing for {lasted}" if lasted else ""
    after = f" after {lasted}" if lasted else ""
    firing = f.state == "firing"
    if f.condition == "Absence":
        series = f.node if f.sensor == "*" else f"{f.node}/{f.sensor}"
        if firing:
            bound = f" (limit {human_duration(f.threshold)})" if f.threshold is not None else ""
            silent = f" for {human_duration(f.duration)}" if f.duration is not None else ""
            return f"no reading from {series}{where}{silent}{bound}"
        silent = f" after {human_duration(f.duration)} without a reading" if f.duration is not None else ""
        return f"{series}{where} reporting again{silent}"
    value = format(_Number(f.value), "")
    if f.condition == "RateOfChange":
        said = f"{f.sensor} {value}{unit} on {f.node}{where}"
        if firing:
            return f"{said} changing faster than {limit}{unit} per minute{ongoing}"
        return f"{said} back under {limit}{unit} per minute{after}"
    if f.condition == "AnomalyScore":
        said = f"anomaly score {value} from {f.sensor} on {f.node}{where}"
        return f"{said} {f.direction} {limit}{ongoing}" if firing else f"{said} back {f.direction} {limit}{after}"
    said = f"{f.sensor} {value}{unit} on {f.node}{where}"
    if firing:
        return f"{said} {f.direction} the {f.severity} level {limit}{ongoing}"
    return f"{said} back {f.direction} {limit}{after}"


def render_or_default(template: str | None, facts: Facts) -> str:
    """`render` of the rule's template, or `default` when it has none or it cannot render: an alert is
    never lost to its text."""
    if template is None:
        return default(facts)
    try:
        return render(template, facts)
    except ValueError:
        return default(facts)


def check(template: str) -> str | None:
    """Why the template cannot render (with every value known and with none), or None when it can."""
    known = Facts("rule", "Threshold", "node", "sensor", "firing", "warning", 12.5, "celsius", 10.0, "above", "press-3", "hall-1", 130.0)
    for facts in (known, Facts("rule", "Absence", "node", "*", "resolved", "warning", None)):
        try:
            render(template, facts)
        except ValueError as exc:
            return (
                f"spec.annotations.summary {template!r} cannot be rendered ({exc}); "
                f"placeholders are {PLACEHOLDERS}, literal braces are doubled ({{{{ }}}})"
            )
    return None
