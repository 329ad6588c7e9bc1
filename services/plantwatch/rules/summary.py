"""An AlertRule's summary: user text with placeholders, rendered into each alert event.

Placeholders: `{rule}`, `{node}`, `{sensor}`, `{level}` and `{value}`, which takes a number's format
spec (`{value:.1f}`; plain `{value}` is `:g`). An unknown placeholder is left as it is.
Attribute and index access (`{node.x}`, `{sensor[0]}`), positional fields and conversions
are refused, so a template can only show these values, never reach into the process.
A template that cannot render (an unbalanced brace, `{value:d}`, `{0}`, `{node.x}`) is an
error when the plant is loaded (`check`); at run time it falls back to the default summary.
"""

from __future__ import annotations

import string

DEFAULT = "{rule} on {node}/{sensor}: {value} ({level})"
PLACEHOLDERS = "{rule}, {node}, {sensor}, {value} (a number: {value:.1f}), {level}"


class _Value:
    """A reading's value that formats as a number with the template's spec, and as '' when absent."""

    __slots__ = ("_value",)

    def __init__(self, value: float | None):
        self._value = value

    def __format__(self, spec: str) -> str:
        if self._value is None:
            return ""
        return format(self._value, spec or "g")


_FORMATTER = string.Formatter()


def render(template: str, rule: str, node: str, sensor: str, value: float | None, level: str) -> str:
    """The summary of one alert event; ValueError if the template cannot render."""
    fields = {"rule": rule, "node": node, "sensor": sensor, "value": _Value(value), "level": level}
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


def render_or_default(template: str, rule: str, node: str, sensor: str, value: float | None, level: str) -> str:
    """`render`, or the default summary when the template cannot render: an alert is never lost to its text."""
    try:
        return render(template, rule, node, sensor, value, level)
    except ValueError:
        return render(DEFAULT, rule, node, sensor, value, level)


def check(template: str) -> str | None:
    """Why the template cannot render (with a value and without), or None when it can."""
    for value in (12.5, None):
        try:
            render(template, "rule", "node", "sensor", value, "warning")
        except ValueError as exc:
            return (
                f"spec.annotations.summary {template!r} cannot be rendered ({exc}); "
                f"placeholders are {PLACEHOLDERS}, literal braces are doubled ({{{{ }}}})"
            )
    return None
